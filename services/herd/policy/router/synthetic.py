"""Scripted routing data: prompt texts whose topic decides which model answers them well.

Each prompt is a short sentence about one topic (finance, sports, science or cooking), drawn from
topic words and shared filler words. Per topic each model has a scripted probability of a good
answer; costs are fixed per model. With the defaults the cheap model is good at finance and cooking,
the medium one at sports, the large one a generalist best at science: a router that learns the
topic gets close to the oracle, no single model does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from herd.policy.data import CalibrationData, ModelArrays

TOPICS: dict[str, tuple[str, ...]] = {
    "finance": ("stock", "bond", "dividend", "inflation", "portfolio", "interest", "equity", "bank", "loan"),
    "sports": ("match", "goal", "league", "coach", "striker", "tournament", "referee", "season", "team"),
    "science": ("atom", "protein", "galaxy", "enzyme", "quantum", "cell", "orbit", "molecule", "genome"),
    "cooking": ("recipe", "oven", "garlic", "simmer", "dough", "sauce", "butter", "roast", "spice"),
}
FILLER = ("what", "about", "explain", "the", "why", "does", "how", "this", "today", "please", "latest", "new")
SKILL: dict[str, Mapping[str, float]] = {
    "small": {"finance": 0.92, "sports": 0.10, "science": 0.15, "cooking": 0.90},
    "medium": {"finance": 0.30, "sports": 0.92, "science": 0.35, "cooking": 0.40},
    "large": {"finance": 0.60, "sports": 0.55, "science": 0.92, "cooking": 0.60},
}
USD: dict[str, float] = {"small": 1e-6, "medium": 5e-6, "large": 2.5e-5}


def topic_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n sentences and their topic index (n,) into list(TOPICS); deterministic for a seed."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    topic = rng.integers(0, len(names), n)
    texts = []
    for t in topic:
        words = list(rng.choice(TOPICS[names[t]], size=rng.integers(1, 3)))
        words += list(rng.choice(FILLER, size=rng.integers(3, 7)))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + "?")
    return texts, topic


def topic_data(
    n: int = 2000,
    seed: int = 0,
    skill: Mapping[str, Mapping[str, float]] = SKILL,
    usd: Mapping[str, float] = USD,
    models: Sequence[str] | None = None,
    task: str = "topics",
) -> tuple[list[str], CalibrationData]:
    """(texts, CalibrationData) for n prompts: model m's score is 1 with probability
    skill[m][topic] else 0, its cost usd[m] per prompt, no errors, no measures."""
    texts, topic = topic_texts(n, seed)
    rng = np.random.default_rng(seed + 1)
    names = list(TOPICS)
    plain = {}
    for m in models or list(skill):
        p = np.array([skill[m][names[t]] for t in topic])
        score = (rng.random(n) < p).astype(float)
        plain[m] = ModelArrays(score, np.full(n, usd[m]), np.ones(n, dtype=bool))
    return texts, CalibrationData(task, np.arange(n, dtype=np.int64), plain)

"""Held-out routing quality of TF-IDF features against the offline sentence encoder.

    python -m benchmarks.router_quality [--splits S]

Prints figures only; docs/benchmarks.md has the latest. Three scripted sets (correctness scripted per
prompt; no model is run):
1. topics: 3,000 synthetic topic sentences (herd.policy.router.synthetic), 3 models, noisy skills;
2. sentiment: the bundled demo's 120 reviews; the cheap model is right on 95% of plain reviews and
   25% of contrastive ones ("but", "though", "yet", "n't", ...), the dear one on 85% of all;
3. capitals: the bundled demo's 60 questions; the cheap model knows the first 30 countries of the
   file (the well-known ones) 95% of the time, the rest 20%; the dear one 90% of all.
Per set and feature kind (`minilm` when its package is installed): mean over S seeded 70/30 splits
(3 for topics) of held-out accuracy at τ = 0.5, APGR, and beside them each model alone, the oracle and
the Bayes ceiling (the best model's scripted probability per prompt, averaged). The demo sets are tiny
(36 and 18 held-out prompts): read their spread.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from benchmarks._lib.entry import run
from herd.policy.data import CalibrationData, ModelArrays
from herd.policy.router import evaluate, train_held_out
from herd.policy.router.encoder import MiniLMEncoder, available
from herd.policy.router.synthetic import SKILL, TOPICS, topic_data, topic_texts

CONTRAST = re.compile(r"\b(but|though|although|yet|however|n't|not|despite|except)\b", re.IGNORECASE)


@dataclass(frozen=True)
class KindFigures:
    kind: str  # feature kind: tfidf, tfidf-char, minilm
    accuracy: float  # mean held-out router accuracy over the splits
    standard_error: float
    apgr: float  # mean over splits (NaN splits left out)


@dataclass(frozen=True)
class SetFigures:
    name: str
    prompts: int
    splits: int
    single: dict[str, float]  # each model alone: mean held-out accuracy
    oracle: float
    ceiling: float  # Bayes ceiling
    kinds: list[KindFigures]


def demo(name: str) -> list[str]:
    text = resources.files("herd.local.demo").joinpath("data", f"{name}.jsonl").read_text()
    return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]


def scripted(texts: Sequence[str], p: dict[str, np.ndarray], seed: int) -> CalibrationData:
    rng = np.random.default_rng(seed)
    n = len(texts)
    usd = {"cheap": 1e-6, "dear": 2e-5}
    plain = {
        m: ModelArrays((rng.random(n) < p[m]).astype(float), np.full(n, usd[m]), np.ones(n, dtype=bool))
        for m in p
    }
    return CalibrationData("demo", np.arange(n, dtype=np.int64), plain)


def sets() -> list[tuple[str, list[str], np.ndarray]]:
    """(name, texts, per-prompt Bayes ceiling); data is rebuilt per split seed by `data_for`."""
    names = list(TOPICS)
    texts, topic = topic_texts(3000, seed=0)
    sent, caps = demo("sentiment"), demo("capitals")
    return [
        ("topics", texts, np.array([max(SKILL[m][names[t]] for m in SKILL) for t in topic])),
        ("sentiment", sent, np.array([0.85 if CONTRAST.search(t) else 0.95 for t in sent])),
        ("capitals", caps, np.array([0.95 if i < 30 else 0.9 for i in range(len(caps))])),
    ]


def data_for(name: str, texts: Sequence[str], seed: int) -> CalibrationData:
    if name == "topics":
        return topic_data(len(texts), seed=0)[1]
    if name == "sentiment":
        cheap = np.array([0.25 if CONTRAST.search(t) else 0.95 for t in texts])
        return scripted(texts, {"cheap": cheap, "dear": np.full(len(texts), 0.85)}, seed)
    cheap = np.array([0.95 if i < 30 else 0.2 for i in range(len(texts))])
    return scripted(texts, {"cheap": cheap, "dear": np.full(len(texts), 0.9)}, seed)


def measure(
    name: str, texts: list[str], ceiling: np.ndarray, splits: int, encoder: MiniLMEncoder | None
) -> SetFigures:
    kinds = ["tfidf", "tfidf-char"] + (["minilm"] if encoder is not None else [])
    acc: dict[str, list[float]] = {k: [] for k in kinds}
    apg: dict[str, list[float]] = {k: [] for k in kinds}
    single: dict[str, list[float]] = {}
    oracle = []
    for seed in range(splits):
        data = data_for(name, texts, seed)
        for kind in kinds:
            router, _, held = train_held_out(texts, data, seed=seed, features=kind, encoder=encoder)
            ev = evaluate(router, [texts[i] for i in held], data.take(held))
            acc[kind].append(ev.router[0])
            apg[kind].append(ev.apgr)
        oracle.append(ev.oracle[0])
        for m, (q, _) in ev.single.items():
            single.setdefault(m, []).append(q)
    by_kind = []
    for kind in kinds:
        a = np.array(acc[kind])
        by_kind.append(
            KindFigures(
                kind, float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))), float(np.nanmean(apg[kind]))
            )
        )
    return SetFigures(
        name,
        len(texts),
        splits,
        {m: float(np.mean(v)) for m, v in single.items()},
        float(np.mean(oracle)),
        float(ceiling.mean()),
        by_kind,
    )


def lines(f: SetFigures) -> list[str]:
    alone = ", ".join(f"{m} alone {q:.3f}" for m, q in f.single.items())
    return [
        f"\n{f.name}: {f.prompts} prompts, {f.splits} splits (held-out 30%)",
        f"  {alone}, oracle {f.oracle:.3f}, Bayes ceiling {f.ceiling:.3f}",
        *(
            f"  {k.kind:<11} router accuracy {k.accuracy:.3f} ± {k.standard_error:.3f} (s.e.)  "
            f"APGR {k.apgr:.2f}"
            for k in f.kinds
        ),
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.router_quality", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--splits", type=int, default=20, help="seeded 70/30 splits per demo set (topics: 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    encoder = MiniLMEncoder() if available() else None
    for name, texts, ceiling in sets():
        splits = 3 if name == "topics" else args.splits
        print("\n".join(lines(measure(name, texts, ceiling, splits, encoder))), flush=True)
    return 0


if __name__ == "__main__":
    run(main)

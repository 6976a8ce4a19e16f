"""Held-out routing quality of TF-IDF features against the offline sentence encoder (issue 10).

    python benchmarks/router_quality.py [--splits S]

Three scripted sets (correctness scripted per prompt; no model is run):
1. topics: 3,000 synthetic topic sentences (herd.policy.router.synthetic), 3 models, noisy skills;
2. sentiment: the bundled demo's 120 reviews; the cheap model is right on 95% of plain reviews and
   25% of contrastive ones ("but", "though", "yet", "n't", ...), the dear one on 85% of all;
3. capitals: the bundled demo's 60 questions; the cheap model knows the first 30 countries of the
   file (the well-known ones) 95% of the time, the rest 20%; the dear one 90% of all.
Per set and feature kind: mean over S seeded 70/30 splits of held-out accuracy at τ = 0.5, APGR, and
beside them each model alone, the oracle and the Bayes ceiling (the best model's scripted probability
per prompt, averaged). The demo sets are tiny (36 and 18 held-out prompts): read their spread.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from importlib import resources

import numpy as np

from herd.policy.data import CalibrationData, ModelArrays
from herd.policy.router import evaluate, train_held_out
from herd.policy.router.encoder import MiniLMEncoder, available
from herd.policy.router.synthetic import SKILL, TOPICS, topic_data, topic_texts

CONTRAST = re.compile(r"\b(but|though|although|yet|however|n't|not|despite|except)\b", re.IGNORECASE)


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


def sets() -> list[tuple[str, list[str], np.ndarray, int]]:
    """(name, texts, per-prompt Bayes ceiling, data seed); data is rebuilt per seed by `data_for`."""
    out = []
    names = list(TOPICS)
    texts, topic = topic_texts(3000, seed=0)
    out.append(("topics", texts, np.array([max(SKILL[m][names[t]] for m in SKILL) for t in topic]), 0))
    sent = demo("sentiment")
    out.append(("sentiment", sent, np.array([0.85 if CONTRAST.search(t) else 0.95 for t in sent]), 0))
    caps = demo("capitals")
    out.append(("capitals", caps, np.array([0.95 if i < 30 else 0.9 for i in range(len(caps))]), 0))
    return out


def data_for(name: str, texts: Sequence[str], seed: int) -> CalibrationData:
    if name == "topics":
        return topic_data(len(texts), seed=0)[1]
    if name == "sentiment":
        cheap = np.array([0.25 if CONTRAST.search(t) else 0.95 for t in texts])
        return scripted(texts, {"cheap": cheap, "dear": np.full(len(texts), 0.85)}, seed)
    cheap = np.array([0.95 if i < 30 else 0.2 for i in range(len(texts))])
    return scripted(texts, {"cheap": cheap, "dear": np.full(len(texts), 0.9)}, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=20)
    args = parser.parse_args()
    kinds = ["tfidf", "tfidf-char"] + (["minilm"] if available() else [])
    encoder = MiniLMEncoder() if available() else None
    for name, texts, ceiling, _ in sets():
        splits = 3 if name == "topics" else args.splits
        acc: dict[str, list[float]] = {k: [] for k in kinds}
        apg: dict[str, list[float]] = {k: [] for k in kinds}
        single: dict[str, list[float]] = {}
        oracle = []
        for seed in range(splits):
            data = data_for(name, texts, seed)
            for kind in kinds:
                router, _, held = train_held_out(texts, data, seed=seed, features=kind, encoder=encoder)  # type: ignore[arg-type]
                ev = evaluate(router, [texts[i] for i in held], data.take(held))
                acc[kind].append(ev.router[0])
                apg[kind].append(ev.apgr)
            oracle.append(ev.oracle[0])
            for m, (q, _) in ev.single.items():
                single.setdefault(m, []).append(q)
        print(f"\n{name}: {len(texts)} prompts, {splits} splits (held-out 30%)")
        print("  " + ", ".join(f"{m} alone {np.mean(v):.3f}" for m, v in single.items())
              + f", oracle {np.mean(oracle):.3f}, Bayes ceiling {ceiling.mean():.3f}")  # fmt: skip
        for kind in kinds:
            a = np.array(acc[kind])
            se = a.std(ddof=1) / np.sqrt(len(a))
            print(f"  {kind:<11} router accuracy {a.mean():.3f} ± {se:.3f} (s.e.)"
                  f"  APGR {np.nanmean(apg[kind]):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Routing speed of the TF-IDF router: prompts/s to load it from JSON and route N short prompts
(transform + predict + rule), beside baselines measured in the same run.

    python -m benchmarks.router_speed [--prompts N] [--repeat R]

Prints figures only (no asserts on speed); docs/benchmarks.md has the latest. Goal: `herd submit`
stays >= 10,000 prompts/s with the router, so routing alone should reach >= 50,000 prompts/s on this
machine (2 cores).

1. Router: trained on 3,000 scripted topic prompts (herd.policy.router.synthetic), 3 models,
   TF-IDF word 1-2-grams; written as JSON (size printed).
2. Prompts: N (default 20,000) short prompts, the bundled demo texts and topic sentences, as a
   JSON-lines payload like `herd submit` reads.
3. Timed, best and median of --repeat: (a) baseline: json-loading the N prompts and sha256 of each
   text (work `herd submit` does anyway); (b) Router.from_json + route (what submit would add);
   (c) the same routing with sklearn's own TfidfVectorizer.transform + LogisticRegression.predict_proba
   on the original fitted objects (the reference implementation); (d) route alone, split into
   transform / predict+rule.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from benchmarks._lib.cpu import load_average
from benchmarks._lib.entry import run
from benchmarks._lib.render import machine_state
from benchmarks._lib.timing import Timings, timed
from herd.policy.router import Router, route_rule, train_router
from herd.policy.router.synthetic import topic_data


@dataclass(frozen=True)
class Row:
    label: str
    timings: Timings[object]


@dataclass(frozen=True)
class RouterSpeed:
    prompts: int
    router_kb: float  # the router's JSON
    terms: int
    models: int
    rows: list[Row]


def prompts(n: int) -> list[str]:
    demo = []
    for name in ("sentiment.jsonl", "capitals.jsonl"):
        text = resources.files("herd.local.demo").joinpath("data", name).read_text()
        demo += [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    topics, _ = topic_data(n, seed=11)
    return [demo[i % len(demo)] if i % 2 else topics[i] for i in range(n)]


def measure(n: int, repeat: int) -> RouterSpeed:
    texts, data = topic_data(3000, seed=0)
    router = train_router(texts, data)
    features = router.features
    if features is None:
        raise RuntimeError("a TF-IDF router has features")
    payload = router.to_json()
    lines = "\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(prompts(n)))
    batch = [json.loads(line)["text"] for line in lines.splitlines()]

    def baseline() -> None:
        for line in lines.splitlines():
            hashlib.sha256(json.loads(line)["text"].encode()).hexdigest()

    # The reference implementation: sklearn's own objects, fitted on the same prompts.
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000).fit(texts)
    targets = [data.plain[m].effective_score(0.5) >= 1 for m in router.models]
    clfs = [
        LogisticRegression(class_weight="balanced", max_iter=2000).fit(vec.transform(texts), y)
        for y in targets
    ]

    def sklearn_route() -> None:
        tfidf = vec.transform(batch)
        p = np.column_stack([c.predict_proba(tfidf)[:, 1] for c in clfs])
        route_rule(p, router.cost_usd, router.tau)

    x = features.transform(batch)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("baseline: json.loads + sha256 per prompt", baseline),
        ("router: from_json + transform + predict + rule", lambda: Router.from_json(payload).route(batch)),
        ("sklearn: TfidfVectorizer + predict_proba + rule", sklearn_route),
        ("  of which transform (pure numpy/scipy)", lambda: features.transform(batch)),
        (
            "  of which predict + rule",
            lambda: route_rule(router.p_good_from_features(x), router.cost_usd, 0.5),
        ),
        ("  of which from_json", lambda: Router.from_json(payload)),
    ]
    return RouterSpeed(
        n,
        len(payload) / 1e3,
        features.dim,
        len(router.models),
        [Row(label, timed(fn, repeat)) for label, fn in cases],
    )


def lines(r: RouterSpeed) -> list[str]:
    out = [
        f"{machine_state()}; router JSON {r.router_kb:.0f} kB, {r.terms} terms, {r.models} models; "
        f"N = {r.prompts}"
    ]
    for row in r.rows:
        best, med = row.timings.best, row.timings.median
        out.append(
            f"{row.label:<50} best {r.prompts / best:>10,.0f}/s  median {r.prompts / med:>10,.0f}/s  "
            f"({best * 1e3:.1f} ms)"
        )
    out.append(f"load average after: {load_average():.2f}")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.router_speed", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--prompts", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=7)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    print("\n".join(lines(measure(args.prompts, args.repeat))))
    return 0


if __name__ == "__main__":
    run(main)

"""Routing speed of the TF-IDF router: prompts/s to load it from JSON and route N short prompts
(transform + predict + rule), beside baselines measured in the same run.

    python benchmarks/router_speed.py [--prompts N] [--repeat R]

Prints figures only (no asserts on speed). Goal (issue 10): `herd submit` stays >= 10,000 prompts/s
with the router, so routing alone should reach >= 50,000 prompts/s on this machine (2 cores).

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
import os
import statistics
import time
from collections.abc import Callable
from importlib import resources

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from herd.policy.router import Router, route_rule, train_router
from herd.policy.router.synthetic import topic_data


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def prompts(n: int) -> list[str]:
    demo = []
    for name in ("sentiment.jsonl", "capitals.jsonl"):
        text = resources.files("herd.local.demo").joinpath("data", name).read_text()
        demo += [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    topics, _ = topic_data(n, seed=11)
    return [demo[i % len(demo)] if i % 2 else topics[i] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n = args.prompts
    texts, data = topic_data(3000, seed=0)
    router = train_router(texts, data)
    payload = router.to_json()
    lines = "\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(prompts(n)))
    batch = [json.loads(line)["text"] for line in lines.splitlines()]
    print(
        f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; router JSON {len(payload) / 1e3:.0f} kB, "
        f"{router.features.dim if router.features else 0} terms, {len(router.models)} models; N = {n}"
    )

    def baseline() -> None:
        for line in lines.splitlines():
            hashlib.sha256(json.loads(line)["text"].encode()).hexdigest()

    def ours() -> None:
        Router.from_json(payload).route(batch)

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000).fit(texts)
    clfs = [LogisticRegression(class_weight="balanced", max_iter=2000).fit(vec.transform(texts), y)
            for y in (data.plain[m].effective_score(0.5) >= 1 for m in router.models)]  # fmt: skip

    def sklearn_route() -> None:
        x = vec.transform(batch)
        p = np.column_stack([c.predict_proba(x)[:, 1] for c in clfs])
        route_rule(p, router.cost_usd, router.tau)

    x = router.features.transform(batch) if router.features else None
    rows = [
        ("baseline: json.loads + sha256 per prompt", baseline),
        ("router: from_json + transform + predict + rule", ours),
        ("sklearn: TfidfVectorizer + predict_proba + rule", sklearn_route),
        ("  of which transform (pure numpy/scipy)", lambda: router.features.transform(batch)),  # type: ignore[union-attr]
        (
            "  of which predict + rule",
            lambda: route_rule(router.p_good_from_features(x), router.cost_usd, 0.5),
        ),
        ("  of which from_json", lambda: Router.from_json(payload)),
    ]
    for label, fn in rows:
        times = timed(fn, args.repeat)
        best, med = min(times), statistics.median(times)
        print(f"{label:<50} best {n / best:>10,.0f}/s  median {n / med:>10,.0f}/s  ({best * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()

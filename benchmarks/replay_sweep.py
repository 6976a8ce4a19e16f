"""Time of a replay sweep (100 thresholds × every tier, every entry model) over a synthetic
calibration job of 10,000 prompts × 3 models, beside baselines measured in the same run.

    python benchmarks/replay_sweep.py [--prompts N] [--thresholds T] [--repeat R]

Prints figures only (no asserts on speed). Goal (issue 8): the sweep in under 5 s on this machine.

1. Data: herd.policy.synthetic, seeded; two configurations: refinement off (4 measures per tier)
   and refinement on/off per tier (8 options per escalating tier, 2 for the last).
2. Sweep: herd.policy.sweep.sweep, best and median of --repeat runs, with the number of policies.
3. One replay: herd.policy.replay.replay of a 3-tier policy (median of 50).
4. Baselines, same policies:
   a. the numpy replay repeated per policy: measured on 2,000 policies, extrapolated to all;
   b. a naive per-prompt Python loop per policy: measured on 20 policies, extrapolated.
5. Exactness: 200 random sweep points replayed; the largest difference in quality and cost.
6. Pareto front of all swept points, and a whole `choose` (70/30 split, sweep on train, held-out
   replay with 1,000 bootstrap resamples) for MinQuality at the medium model's quality.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from herd.policy.calibrate import MinQuality, choose  # noqa: E402
from herd.policy.data import CalibrationData  # noqa: E402
from herd.policy.replay import replay  # noqa: E402
from herd.policy.spec import Policy  # noqa: E402
from herd.policy.sweep import SweepResult, sweep  # noqa: E402
from herd.policy.synthetic import synthetic  # noqa: E402

ROUTE = ["small", "medium", "large"]
GOAL_S = 5.0


def timed(fn, repeat: int) -> tuple[list[float], object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def naive_replay(data: CalibrationData, policy: Policy) -> tuple[float, float]:
    """The obvious per-prompt loop in plain Python: the baseline the vectorised code replaces."""
    total_q = total_c = 0.0
    for j in range(data.n):
        for i, tier in enumerate(policy.tiers):
            a = data.arrays(tier.model, tier.refine)
            total_c += float(a.cost_usd[j])
            if not a.ok[j]:
                break
            value = float(a.measures[tier.measure][j]) if tier.measure else float("nan")
            last = i == len(policy.tiers) - 1
            if not last and bool(tier.escalates(np.array([value]))[0]):
                continue
            total_q += float(a.score[j])
            break
    return total_q / data.n, total_c / data.n * 1000.0


def run(data: CalibrationData, label: str, thresholds: int, repeat: int) -> None:
    print(f"\n== {label}: {data.n:,} prompts × {len(data.models)} models ==")
    times, out = timed(lambda: sweep(data, ROUTE, n_thresholds=thresholds), repeat)
    points: SweepResult = out  # type: ignore[assignment]
    best, median = min(times), statistics.median(times)
    print(
        f"sweep: {len(points):,} policies in {len(points.families)} families; "
        f"best {best:.3f} s, median {median:.3f} s over {repeat} runs "
        f"({best / len(points) * 1e6:.2f} µs per policy)  goal < {GOAL_S:.0f} s: "
        f"{'met' if median < GOAL_S else 'MISSED'}"
    )
    rng = np.random.default_rng(0)
    three = [int(i) for i in np.flatnonzero(points.n_tiers == 3)]
    policy = points.policy(three[len(three) // 2])
    one, _ = timed(lambda: replay(data, policy), 50)
    per_replay = statistics.median(one)
    print(f"one replay (3 tiers): {per_replay * 1e3:.2f} ms")

    sample = rng.choice(len(points), size=min(2000, len(points)), replace=False)
    policies = [points.policy(int(i)) for i in sample]
    start = time.perf_counter()
    for p in policies:
        replay(data, p)
    per = (time.perf_counter() - start) / len(policies)
    print(
        f"baseline a, numpy replay per policy: {per * 1e3:.2f} ms × {len(points):,} = "
        f"{per * len(points):,.0f} s extrapolated ({per * len(points) / median:,.0f}× the sweep)"
    )
    start = time.perf_counter()
    for p in policies[:20]:
        naive_replay(data, p)
    per_naive = (time.perf_counter() - start) / 20
    print(
        f"baseline b, per-prompt Python loop per policy: {per_naive * 1e3:.0f} ms × {len(points):,} = "
        f"{per_naive * len(points) / 3600:,.1f} h extrapolated"
    )
    worst = 0.0
    for i in rng.choice(len(points), size=200, replace=False):
        r = replay(data, points.policy(int(i)))
        worst = max(worst, abs(r.quality - points.quality[i]), abs(r.cost_per_1k - points.cost_per_1k[i]))
    print(f"exactness: max |sweep - replay| over 200 random policies = {worst:.2e}")
    front_times, front = timed(points.front, 3)
    print(f"pareto front: {len(front):,} points in {min(front_times):.3f} s")  # type: ignore[arg-type]
    target = MinQuality(replay(data, Policy.single(data.task, "medium")).quality)
    for method in ("point", "guarantee"):
        choose_times, choice = timed(lambda m=method: choose(data, ROUTE, target, method=m), 1)  # type: ignore[misc]
        print(f"choose({target}, {method}): {choose_times[0]:.2f} s -> {choice.policy.summary()}")  # type: ignore[attr-defined]
        print(f"  {choice.message}")  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--thresholds", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cores available: {cores}; numpy {np.__version__}; thresholds per tier: {args.thresholds}")
    start = time.perf_counter()
    plain = synthetic(n=args.prompts, models=ROUTE, seed=0)
    refined = synthetic(n=args.prompts, models=ROUTE, refined=True, seed=0)
    print(f"synthetic data generated in {time.perf_counter() - start:.2f} s")
    run(plain, "refinement off, 4 measures", args.thresholds, args.repeat)
    run(refined, "refinement on/off per tier, 4 measures", args.thresholds, args.repeat)


if __name__ == "__main__":
    main()

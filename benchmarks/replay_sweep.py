"""Time of a replay sweep (100 thresholds × every tier, every entry model) over a synthetic
calibration job of 10,000 prompts × 3 models, beside baselines measured in the same run.

    python -m benchmarks.replay_sweep [--prompts N] [--thresholds T] [--repeat R]

Prints figures only (no asserts on speed); docs/benchmarks.md has the latest. Goal: the sweep in
under 5 s on this machine.

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
import time
from dataclasses import dataclass

import numpy as np

from benchmarks._lib.entry import run
from benchmarks._lib.render import machine_state
from benchmarks._lib.timing import timed
from herd.policy.calibrate import MinQuality, choose
from herd.policy.data import CalibrationData
from herd.policy.replay import replay
from herd.policy.spec import Policy
from herd.policy.sweep import sweep
from herd.policy.synthetic import synthetic

ROUTE = ["small", "medium", "large"]
GOAL_S = 5.0


@dataclass(frozen=True)
class SweepFigures:
    label: str
    prompts: int
    models: int
    policies: int
    families: int
    sweep_best_s: float
    sweep_median_s: float
    repeat: int
    replay_s: float  # one 3-tier replay, median of 50
    replay_per_policy_s: float  # baseline a
    naive_per_policy_s: float  # baseline b
    max_difference: float  # |sweep - replay| over 200 random policies, quality or cost
    front_points: int
    front_s: float
    target: str
    choose_s: float
    chosen: str
    message: str


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


def measure(data: CalibrationData, label: str, thresholds: int, repeat: int) -> SweepFigures:
    swept = timed(lambda: sweep(data, ROUTE, n_thresholds=thresholds), repeat)
    points = swept.result
    rng = np.random.default_rng(0)
    three = [int(i) for i in np.flatnonzero(points.n_tiers == 3)]
    policy = points.policy(three[len(three) // 2])
    one = timed(lambda: replay(data, policy), 50)
    sample = rng.choice(len(points), size=min(2000, len(points)), replace=False)
    policies = [points.policy(int(i)) for i in sample]
    started = time.perf_counter()
    for p in policies:
        replay(data, p)
    per = (time.perf_counter() - started) / len(policies)
    started = time.perf_counter()
    for p in policies[:20]:
        naive_replay(data, p)
    per_naive = (time.perf_counter() - started) / 20
    worst = 0.0
    for i in rng.choice(len(points), size=200, replace=False):
        r = replay(data, points.policy(int(i)))
        worst = max(worst, abs(r.quality - points.quality[i]), abs(r.cost_per_1k - points.cost_per_1k[i]))
    front = timed(points.front, 3)
    target = MinQuality(replay(data, Policy.single(data.task, "medium")).quality)
    chosen = timed(lambda: choose(data, ROUTE, target))
    return SweepFigures(
        label=label,
        prompts=data.n,
        models=len(data.models),
        policies=len(points),
        families=len(points.families),
        sweep_best_s=swept.best,
        sweep_median_s=swept.median,
        repeat=repeat,
        replay_s=one.median,
        replay_per_policy_s=per,
        naive_per_policy_s=per_naive,
        max_difference=worst,
        front_points=len(front.result),
        front_s=front.best,
        target=str(target),
        choose_s=chosen.best,
        chosen=chosen.result.policy.summary(),
        message=chosen.result.message,
    )


def lines(f: SweepFigures) -> list[str]:
    n, med = f.policies, f.sweep_median_s
    return [
        f"\n== {f.label}: {f.prompts:,} prompts × {f.models} models ==",
        f"sweep: {n:,} policies in {f.families} families; best {f.sweep_best_s:.3f} s, median {med:.3f} s "
        f"over {f.repeat} runs ({f.sweep_best_s / n * 1e6:.2f} µs per policy)  goal < {GOAL_S:.0f} s: "
        f"{'met' if med < GOAL_S else 'MISSED'}",
        f"one replay (3 tiers): {f.replay_s * 1e3:.2f} ms",
        f"baseline a, numpy replay per policy: {f.replay_per_policy_s * 1e3:.2f} ms × {n:,} = "
        f"{f.replay_per_policy_s * n:,.0f} s extrapolated "
        f"({f.replay_per_policy_s * n / med:,.0f}× the sweep)",
        f"baseline b, per-prompt Python loop per policy: {f.naive_per_policy_s * 1e3:.0f} ms × {n:,} = "
        f"{f.naive_per_policy_s * n / 3600:,.1f} h extrapolated",
        f"exactness: max |sweep - replay| over 200 random policies = {f.max_difference:.2e}",
        f"pareto front: {f.front_points:,} points in {f.front_s:.3f} s",
        f"choose({f.target}): {f.choose_s:.2f} s -> {f.chosen}",
        f"  {f.message}",
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.replay_sweep", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--prompts", type=int, default=10_000)
    p.add_argument("--thresholds", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    print(f"{machine_state()}; numpy {np.__version__}; thresholds per tier: {args.thresholds}")
    generated = timed(
        lambda: (
            synthetic(n=args.prompts, models=ROUTE, seed=0),
            synthetic(n=args.prompts, models=ROUTE, refined=True, seed=0),
        )
    )
    plain, refined = generated.result
    print(f"synthetic data generated in {generated.best:.2f} s")
    for data, label in (
        (plain, "refinement off, 4 measures"),
        (refined, "refinement on/off per tier, 4 measures"),
    ):
        print("\n".join(lines(measure(data, label, args.thresholds, args.repeat))), flush=True)
    return 0


if __name__ == "__main__":
    run(main)

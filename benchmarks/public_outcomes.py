"""Herd's chosen policies on public outcome data of 9 models: held-out quality and cost.

    python -m benchmarks.public_outcomes --data PATH [--calibration 285] [--seeds 5]

The data: LLMRouter's routing data (ulab-uiuc/LLMRouter, MIT; 6,108 prompts x 9 open models, per
prompt each model's score; benchmarks/_lib/outcomes.py says how to get it and which proxies stand
in for the per-prompt cost and the confidence it lacks). `--data` (or $HERD_BENCH_DATA) is a clone
of that repository or a folder with its three JSON files; `--data sample` runs on the checked-in
300-prompt sample (benchmarks/_data/llmrouter_sample), which only shows the table's shape.

Per seeded split: `--calibration` prompts (default 285) are the calibration job, the rest are held
out and never seen while choosing. On the calibration prompts Herd chooses, by its own
`herd.policy.calibrate.choose` (what `herd calibrate` runs) over every cascade of the 9 models
(`herd.policy.search`), a policy for each target: `--match <best> --at 0.98` (best: the model with
the best calibration quality) and `--min-quality Q`, with the guarantee (Learn then Test at
`--confidence`) and by the point estimate. Each chosen policy is replayed on the held-out prompts
and printed beside each model alone, the per-prompt oracle (the best score per prompt at the
cheapest model reaching it) and the figures published for this data. Figures only; no assertion.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._lib.entry import run
from benchmarks._lib.outcomes import (
    OUTPUT_TOKENS,
    OutcomeDataError,
    Outcomes,
    calibration_data,
    judge,
    load,
    oracle,
)
from herd.errors import UserError
from herd.policy.calibrate import Match, MinQuality, Target, UnreachableTargetError, choose
from herd.policy.data import CalibrationData
from herd.policy.replay import replay
from herd.policy.spec import Policy

SAMPLE = Path(__file__).parent / "_data" / "llmrouter_sample"
# The proxy confidence sits in this measure's slot (benchmarks/_lib/outcomes.py).
MEASURES = ("first_token_margin",)
PUBLISHED = (
    "ulab-uiuc/LLMRouter (commit 4e7a796, 2025-12-04) publishes this data and the 9 models' prices "
    "but no router's quality or cost on it; none found elsewhere either.",
    "The LLMRouter paper's headline, learned routers 14.6% (relative) above the strongest fixed "
    "model (huggingface.co/papers/2608.06867), is on its own benchmark: not comparable here.",
)


@dataclass(frozen=True)
class Row:
    """One chosen policy on one split: the target's held-out floor and the policy's held-out figures."""

    target: str
    method: str
    policy: str
    guaranteed: bool
    floor: float
    quality: float
    cost_per_1k: float

    @property
    def met(self) -> bool:
        return self.quality >= self.floor - 1e-12


@dataclass(frozen=True)
class Split:
    seed: int
    best: str
    single: dict[str, tuple[float, float]]  # model -> held-out (quality, USD per 1k)
    oracle: tuple[float, float]
    rows: list[Row]
    seconds: float


def targets(best: str, at: float, min_quality: float) -> list[tuple[str, Target]]:
    """The two targets; `best` varies with the split, so the label names its role, not the model."""
    return [
        (f"match best at {at:g}", Match(best, at)),
        (f"min quality {min_quality:g}", MinQuality(min_quality)),
    ]


def one_split(
    outcomes: Outcomes,
    seed: int,
    n_cal: int,
    judge_error: float,
    at: float,
    min_quality: float,
    confidence: float,
    output_tokens: int,
) -> Split:
    """Choose on `n_cal` seeded calibration prompts, replay on the rest."""
    start = time.perf_counter()
    conf = judge(outcomes.scores, judge_error, seed)
    data = calibration_data(outcomes, conf, output_tokens)
    order = np.random.default_rng(seed).permutation(outcomes.n)
    cal, held = np.sort(order[:n_cal]), np.sort(order[n_cal:])
    cal_data, held_data = data.take(cal), data.take(held)
    models = outcomes.models
    on_cal = {m: replay(cal_data, Policy.single(cal_data.task, m)) for m in models}
    best = max(models, key=lambda m: (on_cal[m].quality, -on_cal[m].cost_per_1k))
    alone = {m: replay(held_data, Policy.single(held_data.task, m)) for m in models}
    rows = []
    for label, target in targets(best, at, min_quality):
        floor = at * alone[best].quality if isinstance(target, Match) else min_quality
        for method in ("guarantee", "point"):
            policy, guaranteed = _choose(cal_data, models, target, method, confidence, seed)
            result = replay(held_data, policy)
            rows.append(
                Row(label, method, policy.summary(), guaranteed, floor, result.quality, result.cost_per_1k)
            )
    return Split(
        seed,
        best,
        {m: (r.quality, r.cost_per_1k) for m, r in alone.items()},
        oracle(outcomes.take(held), output_tokens),
        rows,
        time.perf_counter() - start,
    )


def _choose(
    data: CalibrationData, models: list[str], target: Target, method: str, confidence: float, seed: int
) -> tuple[Policy, bool]:
    """Herd's choice; a point estimate that reaches no policy falls back to the best model alone,
    as a user would run it (marked not guaranteed)."""
    try:
        choice = choose(
            data,
            models,
            target,
            measures=MEASURES,
            method=method,
            confidence=confidence,
            seed=seed,
            n_resamples=200,
            advise=False,
        )
    except UnreachableTargetError:
        results = {m: replay(data, Policy.single(data.task, m)) for m in models}
        return Policy.single(data.task, max(models, key=lambda m: results[m].quality)), False
    return choice.policy, choice.guaranteed


def report(
    splits: Sequence[Split], outcomes: Outcomes, n_cal: int, judge_error: float, confidence: float
) -> list[str]:
    """The table: per target and method, the mean over splits and how often the target was met."""
    held = outcomes.n - n_cal
    labels = [f"{r.target}, {r.method}" for r in splits[0].rows] + [f"{m} alone" for m in outcomes.models]
    width = max(map(len, labels)) + 2
    out = [
        f"\n== judge error {judge_error:g} ({'pure noise: the control' if judge_error == 0.5 else 'proxy'}),"
        f" {len(splits)} split(s), {n_cal} calibration / {held} held-out prompts,"
        f" confidence {confidence:g} ==",
        f"{'policy':<{width}} {'held-out quality':>16} {'USD per 1k':>11}  target met",
    ]
    for m in outcomes.models:
        q = np.mean([s.single[m][0] for s in splits])
        c = np.mean([s.single[m][1] for s in splits])
        out.append(f"{m + ' alone':<{width}} {q:>16.4f} {c:>11.5f}")
    q, c = np.mean([s.oracle[0] for s in splits]), np.mean([s.oracle[1] for s in splits])
    out.append(f"{'per-prompt oracle':<{width}} {q:>16.4f} {c:>11.5f}")
    for i, row in enumerate(splits[0].rows):
        rows = [s.rows[i] for s in splits]
        q, c = np.mean([r.quality for r in rows]), np.mean([r.cost_per_1k for r in rows])
        floor = np.mean([r.floor for r in rows])
        met = sum(r.met for r in rows)
        sure = sum(r.guaranteed for r in rows)
        label = f"{row.target}, {row.method}"
        out.append(
            f"{label:<{width}} {q:>16.4f} {c:>11.5f}  {met}/{len(rows)} (floor {floor:.4f}; certified {sure})"
        )
    for s in splits:
        out.append(f"  seed {s.seed} ({s.seconds:.1f} s to choose all four; best on calibration: {s.best}):")
        out.extend(
            f"    {r.target}, {r.method}: {r.quality:.4f} at {r.cost_per_1k:.5f} (floor {r.floor:.4f}"
            f"{', certified' if r.guaranteed else ''}): {r.policy}"
            for r in s.rows
        )
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.public_outcomes", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument(
        "--data",
        help="a clone of ulab-uiuc/LLMRouter or a folder with its JSON files "
        "(default $HERD_BENCH_DATA); `sample`: the checked-in 300-prompt sample",
    )
    p.add_argument("--calibration", type=int, default=285, help="calibration prompts per split (default 285)")
    p.add_argument("--seeds", type=int, default=5, help="seeded splits (default 5)")
    p.add_argument("--confidence", type=float, default=0.9, help="the guarantee's confidence (default 0.9)")
    p.add_argument("--at", type=float, default=0.98, help="match the best model at this share (default 0.98)")
    p.add_argument("--min-quality", type=float, default=0.55, help="a quality floor (default 0.55)")
    p.add_argument(
        "--judge-error",
        type=float,
        action="append",
        help="the proxy judge's error rate; repeat for several (default 0.2 and 0.5)",
    )
    p.add_argument(
        "--output-tokens", type=int, default=OUTPUT_TOKENS, help="the cost proxy's tokens per answer"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.seeds < 1 or args.output_tokens < 0:
        p.exit(2, f"{p.prog}: --seeds must be at least 1 and --output-tokens at least 0\n")
    try:
        outcomes = load(str(SAMPLE) if args.data == "sample" else args.data)
    except OutcomeDataError as e:
        p.exit(2, f"{p.prog}: {e}\n")
    if not 1 <= args.calibration < outcomes.n - 1:
        p.exit(
            2, f"{p.prog}: --calibration must lie between 1 and {outcomes.n - 2} for {outcomes.n} prompts\n"
        )
    errors = args.judge_error or [0.2, 0.5]
    print(f"data: {outcomes.source}: {outcomes.n} prompts x {len(outcomes.models)} models")
    print("published figures for this data:", *(f"  {line}" for line in PUBLISHED), sep="\n")
    for judge_error in errors:
        try:
            splits = [
                one_split(
                    outcomes,
                    seed,
                    args.calibration,
                    judge_error,
                    args.at,
                    args.min_quality,
                    args.confidence,
                    args.output_tokens,
                )
                for seed in range(args.seeds)
            ]
        except UserError as e:  # a bad --judge-error, --confidence or --at, said by name
            p.exit(2, f"{p.prog}: {e}\n")
        print("\n".join(report(splits, outcomes, args.calibration, judge_error, args.confidence)), flush=True)
    return 0


if __name__ == "__main__":
    run(main)

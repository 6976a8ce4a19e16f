"""Choose the policy that meets a target: search on a train split, estimate on a held-out split.

The search space is everything `sweep` enumerates: every entry model on the route, every single
model alone (never escalate), every depth, measure, refinement setting and quantile threshold per
tier. The pick is exact on the train prompts (FrugalGPT, Chen, Zaharia & Zou 2023, searches the
same per-tier thresholds for the best accuracy under a budget), and the held-out replay with its
percentile-bootstrap interval is the estimate a user should believe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from herd.policy.confidence import Reliability, add_p_correct, fit_maps, reliability
from herd.policy.data import CalibrationData, CalibrationDataError
from herd.policy.replay import ReplayBootstrap, ReplayResult, bootstrap, replay
from herd.policy.spec import RAW_MEASURES, Policy
from herd.policy.sweep import SweepResult, sweep


class UnreachableTargetError(ValueError):
    """No searched policy meets the target on the train prompts; the message gives the best one."""


@dataclass(frozen=True)
class MinQuality:
    """The cheapest policy whose quality (mean score, or accuracy with a scorer cut) is >= `quality`."""

    quality: float


@dataclass(frozen=True)
class MaxCostPer1k:
    """The best-quality policy whose attributed cost is <= `usd` per 1k prompts."""

    usd: float


@dataclass(frozen=True)
class Match:
    """The cheapest policy with quality >= `at` × the quality of `model` alone on the same prompts."""

    model: str
    at: float = 0.98
    refine: bool = False


Target = MinQuality | MaxCostPer1k | Match


@dataclass(frozen=True)
class Choice:
    """The chosen policy, its train figures, and its held-out replay with 95% bootstrap intervals.

    `reference_quality`: for Match, the model-alone quality (train, held-out); else None.
    `message`: one plain sentence on the held-out estimate against the target.
    """

    policy: Policy
    target: Target
    train_quality: float
    train_cost_per_1k: float
    held_out: ReplayResult
    held_out_intervals: ReplayBootstrap
    meets_target_on_held_out: bool
    message: str
    train_rows: np.ndarray
    held_out_rows: np.ndarray
    searched: int
    reference_quality: tuple[float, float] | None = None
    reliability: tuple[Reliability, ...] = ()


def split(n: int, train_fraction: float = 0.7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible random split of rows 0..n-1: (train, held_out) index arrays, each sorted.

    Raises CalibrationDataError when either side would be empty.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    k = int(round(n * train_fraction))
    if k < 1 or k >= n:
        raise CalibrationDataError(f"{n} prompt(s) cannot be split into non-empty train and held-out parts")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:k]), np.sort(order[k:])


def select(points: SweepResult, target: Target, reference: float | None = None, n_train: int = 0) -> int:
    """Index of the point meeting `target`: cheapest (MinQuality, Match: quality >= at × `reference`)
    or best quality (MaxCostPer1k). Ties go to higher quality / lower cost, then fewer tiers, then
    the first point. Raises UnreachableTargetError naming the closest policy (`n_train`: for the message)."""
    q, c, tiers = points.quality, points.cost_per_1k, points.n_tiers
    index = np.arange(len(q))
    eps = 1e-12
    if isinstance(target, MaxCostPer1k):
        feasible = c <= target.usd * (1 + eps) + eps
        order = np.lexsort((index, tiers, c, -q))
    else:
        floor = target.quality if isinstance(target, MinQuality) else target.at * float(reference or 0.0)
        feasible = q >= floor - eps
        order = np.lexsort((index, tiers, -q, c))
    chosen = order[feasible[order]]
    if chosen.size:
        return int(chosen[0])
    n = f"the {n_train} train prompts" if n_train else "the train prompts"
    if isinstance(target, MaxCostPer1k):
        best = int(np.lexsort((index, tiers, -q, c))[0])
        raise UnreachableTargetError(
            f"no policy costs at most ${target.usd:.6g} per 1k prompts on {n}; the cheapest is "
            f"{points.policy(best).summary()} at ${c[best]:.6g} per 1k"
        )
    best = int(np.lexsort((index, tiers, c, -q))[0])
    wanted = (
        f"quality {target.quality:.4g}"
        if isinstance(target, MinQuality)
        else f"{target.at:.0%} of {target.model} alone ({float(reference or 0.0):.4g})"
    )
    raise UnreachableTargetError(
        f"no policy reaches {wanted} on {n}; the best is {points.policy(best).summary()} at {q[best]:.4g}"
    )


def choose(
    data: CalibrationData,
    route: Sequence[str],
    target: Target,
    measures: Sequence[str] = RAW_MEASURES,
    n_thresholds: int = 100,
    scorer_cut: float | None = None,
    train_fraction: float = 0.7,
    seed: int = 0,
    calibrate_from: str = "first_token_margin",
    n_resamples: int = 1000,
) -> Choice:
    """Search every policy over `route` on a seeded train split (default 70%) and pick per `target`;
    replay the pick on the held-out rest with 95% percentile-bootstrap intervals.

    With "p_correct" in `measures`, isotonic maps from `calibrate_from` to P(correct) (correct:
    score >= scorer_cut, or 0.5) are fitted on the train rows only and stored in the chosen policy;
    their held-out ECE before/after is in `Choice.reliability`.

    Raises CalibrationDataError (unknown model, too few prompts), UnreachableTargetError.
    """
    data.check_route(route)
    if isinstance(target, Match) and target.model not in route:
        raise CalibrationDataError(f"Match model {target.model!r} is not on the route {list(route)}")
    train_rows, held_rows = split(data.n, train_fraction, seed)
    maps = {}
    if "p_correct" in measures:
        cut = 0.5 if scorer_cut is None else scorer_cut
        maps = fit_maps(data, calibrate_from, train_rows, cut, models=route)
        data = add_p_correct(data, maps)
    train, held = data.take(train_rows), data.take(held_rows)
    points = sweep(train, route, measures, n_thresholds, scorer_cut, calibration=maps)
    reference = None
    if isinstance(target, Match):
        single = Policy.single(data.task, target.model, target.refine)
        reference = (replay(train, single, scorer_cut).quality, replay(held, single, scorer_cut).quality)
    best = select(points, target, reference[0] if reference else None, train.n)
    policy = points.policy(best)
    result = replay(held, policy, scorer_cut)
    intervals = bootstrap(result, n_resamples=n_resamples, seed=seed)
    meets, message = _verdict(target, result, intervals, reference)
    return Choice(
        policy, target, float(points.quality[best]), float(points.cost_per_1k[best]), result, intervals,
        meets, message, train_rows, held_rows, len(points), reference,
        tuple(reliability(data, maps, held_rows, 0.5 if scorer_cut is None else scorer_cut)),
    )  # fmt: skip


def _verdict(
    target: Target, result: ReplayResult, intervals: ReplayBootstrap, reference: tuple[float, float] | None
) -> tuple[bool, str]:
    n = len(result.score)
    if isinstance(target, MaxCostPer1k):
        cost = intervals.cost_per_1k
        meets = result.cost_per_1k <= target.usd * (1 + 1e-12)
        verb = "within" if meets else "over"
        return meets, (
            f"On {n} held-out prompts the policy costs ${cost.value:.6g} per 1k prompts "
            f"(95% CI {cost.low:.6g}-{cost.high:.6g}), {verb} the budget of ${target.usd:.6g}."
        )
    floor = target.quality if isinstance(target, MinQuality) else target.at * (reference or (0.0, 0.0))[1]
    what = (
        f"the target {floor:.4g}"
        if isinstance(target, MinQuality)
        else f"{target.at:.0%} of {target.model} alone on the same prompts ({floor:.4g})"
    )
    quality = intervals.quality
    meets = result.quality >= floor - 1e-12
    return meets, (
        f"On {n} held-out prompts the policy's quality is {quality.value:.4g} "
        f"(95% CI {quality.low:.4g}-{quality.high:.4g}), {'meeting' if meets else 'below'} {what}."
    )

"""Choose the policy that meets a target, with a guarantee (default) or by a point estimate.

The search space is everything herd.policy.search enumerates: every subset of the route's models
run cheapest first (every entry model, every skip, every depth, every single model alone), each
tier's refinement setting, measure and quantile threshold (FrugalGPT, Chen, Zaharia & Zou 2023,
searches per-tier thresholds the same way); only its exact Pareto front on the search rows is kept.

- `method="guarantee"`: Learn then Test along the cost order (herd.policy.guarantee): the search and
  the order of the candidates come from one seeded part of the prompts, the test from the other, so
  the chosen policy meets the target on new prompts with probability >= the stated confidence.
- `method="point"`: the cheapest policy whose point estimate on a train split meets the target, and
  its held-out replay with a percentile-bootstrap interval: an estimate, not a guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from herd.errors import UserError
from herd.policy.confidence import Reliability, add_p_correct, fit_maps, reliability
from herd.policy.data import CalibrationData, CalibrationDataError
from herd.policy.guarantee import Certificate, Floor, GuaranteeError, certify, prompts_needed
from herd.policy.replay import ReplayBootstrap, ReplayResult, bootstrap, replay
from herd.policy.search import SearchResult, search
from herd.policy.spec import RAW_MEASURES, Policy
from herd.policy.sweep import SweepResult


class UnreachableTargetError(UserError, ValueError):
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


def target_text(target: Target) -> str:
    """A target as the commands print it: `quality >= 0.9`, `cost <= $2 per 1k prompts`, `98% of m alone`."""
    if isinstance(target, MinQuality):
        return f"quality >= {target.quality:g}"
    if isinstance(target, MaxCostPer1k):
        return f"cost <= ${target.usd:g} per 1k prompts"
    return f"{target.at:.0%} of {target.model} alone"


@dataclass(frozen=True)
class Thin:
    """Too little evidence to save: `policy`, cheaper than the chosen one, met the target on the test
    prompts by its point estimate but failed its test; about `prompts` calibration prompts in all
    would let it pass with probability >= `power` (None: more than Herd looks for)."""

    policy: Policy
    cost_per_1k: float
    quality: float
    prompts: int | None
    power: float


@dataclass(frozen=True)
class Choice:
    """The chosen policy, its figures on the search rows, and its replay on the other rows with 95%
    bootstrap intervals.

    `method`: "guarantee" (Learn then Test, herd.policy.guarantee; the rows are the order part and
    the test part) or "point" (the point estimate on a train split; the rows are train and held-out).
    `guaranteed`: the guarantee holds at `confidence` (always False for "point"); `bound`: the lower
    confidence bound on quality − target (Match: quality − at × the reference's), None without one;
    `tested`: candidates tested in cost order, of `candidates`. `reference_quality`: for Match, the
    model-alone quality (search rows, other rows); else None. `thin`: a cheaper policy the evidence
    was too thin to certify. `left_out`: per model, prompts left out for a non-answer.
    `message`: one plain sentence on what the choice promises.
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
    method: str = "point"
    confidence: float | None = None
    guaranteed: bool = False
    bound: float | None = None
    test: str = ""
    tested: int = 0
    candidates: int = 0
    thin: Thin | None = None
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        """Not safe to activate without the user asking: a guarantee that failed, or (point
        estimate) a held-out estimate below the target."""
        return not self.guaranteed if self.method == "guarantee" else not self.meets_target_on_held_out


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


def select(
    points: SearchResult | SweepResult, target: Target, reference: float | None = None, n_train: int = 0
) -> int:
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


METHODS = ("guarantee", "point")
# The guarantee's default share of prompts that search and order the candidates (the rest test
# them): the test part decides what can be certified, so it gets the larger share.
ORDER_FRACTION = 0.3
# At most this many candidates, evenly along the order part's Pareto front, go to the test.
MAX_CANDIDATES = 64


def choose(
    data: CalibrationData,
    route: Sequence[str],
    target: Target,
    measures: Sequence[str] = RAW_MEASURES,
    n_thresholds: int = 100,
    scorer_cut: float | None = None,
    train_fraction: float | None = None,
    seed: int = 0,
    calibrate_from: str = "first_token_margin",
    n_resamples: int = 1000,
    method: str = "guarantee",
    confidence: float = 0.9,
    advise: bool = True,
) -> Choice:
    """Choose a policy over `route` for `target` on `data`, by `method`:

    - "guarantee" (default; herd.policy.guarantee): search every policy on a seeded order part
      (`train_fraction`, default 30%), order its Pareto front from the most expensive to the
      cheapest, and test the candidates in that order on the other prompts at `confidence`; the
      choice is the cheapest one certified. Nothing certified: the safe policy, the `Match` model
      alone (certain for at <= 1) or the best single model (no guarantee), and `Choice.thin` says
      how many prompts would likely let a cheaper one pass (`advise=False` skips that power
      calculation, the slow part on small samples). A cost cap (`MaxCostPer1k`) has no
      finite-sample guarantee here: it is chosen by the point estimate, labelled so.
    - "point": the cheapest policy whose point estimate on a seeded train split (default 70%) meets
      the target, replayed on the held-out rest; no guarantee.

    Prompts on which a model of the route gave no answer are left out first (`Choice.left_out`).
    With "p_correct" in `measures`, isotonic maps from `calibrate_from` to P(correct) (correct:
    score >= scorer_cut, or 0.5) are fitted on the search rows only and stored in the chosen policy;
    their ECE before/after on the other rows is in `Choice.reliability`.

    Raises CalibrationDataError (unknown model, too few prompts, no answered prompt),
    UnreachableTargetError (point estimate), GuaranteeError (a confidence outside (0, 1)).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    data.check_route(route)
    if isinstance(target, Match) and target.model not in route:
        raise CalibrationDataError(f"Match model {target.model!r} is not on the route {list(route)}")
    answered = data.answered(route)
    left_out = {m: k for m, k in data.non_answers(route).items() if k}
    if not answered.any():
        raise CalibrationDataError(f"no prompt of the {data.n} was answered by every model of {list(route)}")
    if not answered.all():
        data = data.take(np.flatnonzero(answered))
    guarantee = method == "guarantee" and isinstance(target, MinQuality | Match)
    fraction = train_fraction if train_fraction is not None else (ORDER_FRACTION if guarantee else 0.7)
    if guarantee:
        _confidence_in_range(confidence)
    train_rows, held_rows = split(data.n, fraction, seed)
    cut = 0.5 if scorer_cut is None else scorer_cut
    maps = fit_maps(data, calibrate_from, train_rows, cut, models=route) if "p_correct" in measures else {}
    if maps:
        data = add_p_correct(data, maps)
    train, held = data.take(train_rows), data.take(held_rows)
    points = search(train, route, measures, n_thresholds, scorer_cut, calibration=maps)
    reference = None
    if isinstance(target, Match):
        single = Policy.single(data.task, target.model, target.refine)
        reference = (replay(train, single, scorer_cut).quality, replay(held, single, scorer_cut).quality)
    reliable = tuple(reliability(data, maps, held_rows, cut))
    common: dict[str, Any] = {
        "train_rows": train_rows,
        "held_out_rows": held_rows,
        "searched": points.searched,
        "reference_quality": reference,
        "reliability": reliable,
        "left_out": left_out,
    }
    if guarantee and not isinstance(target, MaxCostPer1k):
        return _guaranteed(
            data, train, held, points, target, scorer_cut, seed, n_resamples, confidence, advise, common
        )
    best = select(points, target, reference[0] if reference else None, train.n)
    policy = points.policy(best)
    result = replay(held, policy, scorer_cut)
    intervals = bootstrap(result, n_resamples=n_resamples, seed=seed)
    meets, message = _verdict(target, result, intervals, reference)
    return Choice(
        policy,
        target,
        float(points.quality[best]),
        float(points.cost_per_1k[best]),
        result,
        intervals,
        meets,
        message,
        **common,
    )


def candidates(
    points: SearchResult | SweepResult, target: Target, task: str, reference_cost: float | None = None
) -> tuple[list[Policy], int]:
    """The candidates to test, safest first, from a search (or sweep) on the order part: its Pareto front from
    the most expensive to the cheapest (at most MAX_CANDIDATES, evenly spaced, the ends kept). For
    Match the model alone comes first and only points cheaper than it (`reference_cost`, USD per 1k
    on the order part) follow: anything costlier is never worth it. Returns (policies, sure), `sure`
    being how many leading candidates meet the target by construction (the model alone for at <= 1).
    Any other search can feed `certify` the same way: a list ordered safest first."""
    front = points.front()[::-1]
    lead: list[Policy] = []
    if isinstance(target, Match):
        lead = [Policy.single(task, target.model, target.refine)]
        if reference_cost is not None:
            front = front[points.cost_per_1k[front] < reference_cost]
    if len(front) > MAX_CANDIDATES:
        front = front[np.unique(np.linspace(0, len(front) - 1, MAX_CANDIDATES).round().astype(int))]
    policies = lead + [p for p in (points.policy(int(i)) for i in front) if p not in lead]
    sure = 1 if isinstance(target, Match) and target.at <= 1.0 else 0
    return policies, sure


def _guaranteed(
    data: CalibrationData,
    order: CalibrationData,
    test: CalibrationData,
    points: SearchResult,
    target: MinQuality | Match,
    scorer_cut: float | None,
    seed: int,
    n_resamples: int,
    confidence: float,
    advise: bool,
    common: dict[str, Any],
) -> Choice:
    """Learn then Test: order on `order`, fixed-sequence test on `test` (herd.policy.guarantee)."""
    reference = None
    reference_cost = None
    if isinstance(target, Match):
        single = Policy.single(data.task, target.model, target.refine)
        reference = replay(test, single, scorer_cut).score
        reference_cost = replay(order, single, scorer_cut).cost_per_1k
        floor = Floor(reference=reference, at=target.at)
    else:
        floor = Floor(quality=target.quality)
    policies, sure = candidates(points, target, data.task, reference_cost)
    results = [replay(test, p, scorer_cut) for p in policies]
    scores = np.array([r.score for r in results]).reshape(len(results), test.n)
    cert = certify(scores, floor, confidence, seed, sure)
    k = cert.chosen
    if k is not None and k < sure:  # the reference alone: its margin (1 - at) x quality is >= 0 surely
        cert = replace(cert, bound=0.0)
    if k is not None:
        policy, result = policies[k], results[k]
    else:  # nothing certified (a quality target the best model may miss): the best model alone
        policy = _best_single(data, list(points.route), scorer_cut, target)
        result = replay(test, policy, scorer_cut)
    thin = None
    if advise:
        thin = _thin(policies, results, order, scorer_cut, floor, confidence, seed, k, data.n, test.n)
    on_order = replay(order, policy, scorer_cut)
    intervals = bootstrap(result, n_resamples=n_resamples, seed=seed)
    meets = _meets(target, result.quality, reference)
    message = _promise(target, policy, cert, test.n, confidence, k is not None and k < sure)
    return Choice(
        policy,
        target,
        on_order.quality,
        on_order.cost_per_1k,
        result,
        intervals,
        meets,
        message,
        **common,
        method="guarantee",
        confidence=confidence,
        guaranteed=k is not None,
        bound=cert.bound,
        test=cert.test,
        tested=int(np.count_nonzero(~np.isnan(cert.p_values))),
        candidates=len(policies),
        thin=thin,
    )


def _best_single(data: CalibrationData, route: list[str], scorer_cut: float | None, target: Target) -> Policy:
    """The safe policy when nothing is certified: the Match model alone, else the model with the
    best quality alone on every prompt (ties: the cheaper)."""
    if isinstance(target, Match):
        return Policy.single(data.task, target.model, target.refine)
    results = [replay(data, Policy.single(data.task, m), scorer_cut) for m in route]
    best = min(range(len(route)), key=lambda i: (-results[i].quality, results[i].cost_per_1k))
    return Policy.single(data.task, route[best])


def _thin(
    policies: list[Policy],
    results: list[ReplayResult],
    order: CalibrationData,
    scorer_cut: float | None,
    floor: Floor,
    confidence: float,
    seed: int,
    chosen: int | None,
    n: int,
    n_test: int,
) -> Thin | None:
    """When nothing cheaper than the safe policy was certified but a cheaper candidate met the target
    on the test prompts by its point estimate: the one that would need the fewest prompts to pass
    (checked for up to 8 of them, evenly along the order), as a total of calibration prompts."""
    if chosen is not None and chosen > 0:
        return None
    wanted = floor.value
    cheaper = [i for i in range(1, len(policies)) if results[i].quality >= wanted - 1e-12]
    if not cheaper:
        return None
    picked = [cheaper[int(j)] for j in np.unique(np.linspace(0, len(cheaper) - 1, 8).round().astype(int))]
    needs = {i: prompts_needed(results[i].score, floor, confidence, seed=seed) for i in picked}
    known = [i for i in picked if needs[i] is not None]
    i = min(known, key=lambda j: (needs[j], -j)) if known else picked[-1]
    need = needs[i]
    total = None if need is None else int(np.ceil(need * n / n_test))
    cost = replay(order, policies[i], scorer_cut).cost_per_1k
    return Thin(policies[i], cost, results[i].quality, total, 0.8)


def _meets(target: Target, quality: float, reference: np.ndarray | None) -> bool:
    if isinstance(target, MinQuality):
        return quality >= target.quality - 1e-12
    if isinstance(target, Match) and reference is not None:
        return quality >= target.at * float(np.mean(reference)) - 1e-12
    return True


def _promise(
    target: MinQuality | Match, policy: Policy, cert: Certificate, n: int, confidence: float, sure: bool
) -> str:
    """One sentence: what the choice promises, with its bound, or why it promises nothing."""
    what = (
        f"quality >= {target.quality:.4g}"
        if isinstance(target, MinQuality)
        else f"quality >= {target.at:.0%} of {target.model} alone"
    )
    if cert.chosen is None:
        return (
            f"No guarantee: no policy, not even {policy.summary()}, passed the test of {what} at "
            f"{confidence:.0%} confidence on {n} test prompts."
        )
    if sure:
        return (
            f"{policy.summary()} meets {what} by definition (it is the reference); no cheaper policy "
            f"passed the test at {confidence:.0%} confidence on {n} test prompts."
        )
    bound = cert.bound if cert.bound is not None else float("nan")
    margin = (
        f"its quality's lower bound is {target.quality + bound:.4g}"
        if isinstance(target, MinQuality)
        else f"the lower bound of quality - {target.at:g} x {target.model} alone is {bound:+.4f}"
    )
    return (
        f"Guaranteed at {confidence:.0%} confidence ({cert.test} test, {n} test prompts): {what} "
        f"on new prompts drawn like these; {margin}."
    )


def _confidence_in_range(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise GuaranteeError(f"--confidence must lie strictly between 0 and 1, got {confidence}")


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

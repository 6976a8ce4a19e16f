"""Threshold sweeps over every entry model and every tier, and the quality–cost Pareto front.

Candidate thresholds per (model, measure, refinement) are quantiles of the measure's observed values
over all prompts at levels 1/T, 2/T, ..., 1 (Ramírez, Birch & Titov 2024 set the margin threshold
as the quantile giving a target share of large-model calls; here every share in steps of 1/T is a
candidate), deduplicated, plus "never escalate" (the shorter policy ending at that tier).

How it is fast (no per-policy replay): orient each measure as a key with "escalate iff key < t" and
bucket each prompt by how many thresholds lie at or below its key. Escalation is nested along the
route, so a prompt reaches tier k iff, for every earlier tier i, its bucket b_i <= m_i (the index of
tier i's threshold). Every figure is a sum over prompts of a per-prompt value times that indicator:

    quality(m) = sum_j s_0j + sum_{k>=1} sum_j [b_0j <= m_0, ..., b_(k-1)j <= m_(k-1)] (s_kj - s_(k-1)j)
    cost(m)    = sum_j c_0j + sum_{k>=1} sum_j [...] c_kj

(s: score, 0 on error; c: attributed cost). For each k that is a k-dimensional histogram of the
values over the buckets (one `np.bincount`, O(n)) followed by a cumulative sum along each axis, so
the whole grid of T^(d-1) threshold combinations of a d-tier policy costs O(d·n + d·T^(d-1)) per
combination of measures and refinement, with O(1) per policy. A 3-model route gives 101^2 policies
per measure pair from two bincounts of n values. Errors (key +inf) and missing values never escalate.

When the full grid of a policy shape would exceed `max_points`, the thresholds of that shape are
drawn from a coarser quantile grid (fewer levels, same rule) so it fits; a 3-model route never needs it.
FrugalGPT (Chen, Zaharia & Zou 2023) searches the same per-tier thresholds under a budget with
scipy's brute force; the exhaustive grid here is exact on the calibration prompts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from herd.policy.data import CalibrationData, CalibrationDataError, ModelArrays
from herd.policy.spec import RAW_MEASURES, CalibrationMap, Measure, Policy, Tier, is_confidence


@dataclass(frozen=True)
class Option:
    """How one tier runs in a swept policy: its model, measure (None on the last tier), refinement."""

    model: str
    measure: Measure | None
    refine: bool


@dataclass(frozen=True)
class Family:
    """Policies sharing entry model and tier options; one point per threshold combination.

    `thresholds[i]`: candidate thresholds of escalating tier i in the measure's own units;
    points `offset .. offset + prod(shape)` in C order over `shape = (len(t) for t in thresholds)`.
    """

    options: tuple[Option, ...]
    thresholds: tuple[np.ndarray, ...]
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def policy(self, task: str, cell: int, calibration: Mapping[tuple[str, bool], CalibrationMap]) -> Policy:
        """The Policy of the family's point `cell` (0 <= cell < size, C order over `shape`);
        `calibration[(model, refine)]` is recorded for the tiers escalating on `p_correct`."""
        index = np.unravel_index(cell, self.shape) if self.shape else ()
        tiers = [
            Tier(
                model=o.model,
                measure=o.measure,
                threshold=float(self.thresholds[t][index[t]]),
                refine=o.refine,
            )
            for t, o in enumerate(self.options[:-1])
        ]
        last = self.options[-1]
        tiers.append(Tier(model=last.model, refine=last.refine))
        maps = {
            o.model: calibration[(o.model, o.refine)] for o in self.options[:-1] if o.measure == "p_correct"
        }
        return Policy(task=task, entry=tiers[0].model, tiers=tiers, calibration=maps)


@dataclass(frozen=True)
class SweepResult:
    """Every swept policy as a point. `quality`, `cost_per_1k` (USD per 1k prompts): shape (P,);
    `escalation_rate`: (P, len(route) - 1), the share of prompts reaching tier i that escalate from it,
    NaN past the policy's last escalating tier or when no prompt reaches the tier."""

    task: str
    route: tuple[str, ...]
    families: tuple[Family, ...]
    quality: np.ndarray
    cost_per_1k: np.ndarray
    escalation_rate: np.ndarray
    n_tiers: np.ndarray
    calibration: Mapping[tuple[str, bool], CalibrationMap]

    def __len__(self) -> int:
        return len(self.quality)

    def policy(self, i: int) -> Policy:
        """The Policy of point `i` (0 <= i < len(self))."""
        offsets = np.array([f.offset for f in self.families])
        family = self.families[int(np.searchsorted(offsets, i, side="right")) - 1]
        return family.policy(self.task, int(i) - family.offset, self.calibration)

    @property
    def searched(self) -> int:
        """How many policies were evaluated: every one of them is a point here."""
        return len(self)

    def front(self) -> np.ndarray:
        """Indices of the Pareto-optimal points, by ascending cost."""
        return pareto_front(np.column_stack([self.cost_per_1k, self.quality]))


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of `points` (P, 2) = (cost, quality), by ascending cost.

    A point is dominated when another costs no more and scores at least as much, one of them strictly;
    of exact duplicates the first is kept. Rows with NaN are ignored. O(P log P).
    """
    points = np.asarray(points, dtype=float)
    valid = np.flatnonzero(~np.isnan(points).any(axis=1))
    cost, quality = points[valid, 0], points[valid, 1]
    order = np.lexsort((-quality, cost))
    q = quality[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(q)[:-1]])
    return np.asarray(valid[order[q > best_before]])


def candidate_thresholds(key: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Ascending unique quantiles of the finite `key` values at levels 1/T .. 1 (T = n_thresholds);
    empty when no value is finite (a measure that is always missing never escalates).

    Each quantile q is replaced by the shortest decimal t with the same effect on these prompts
    (the same keys lie below t as below q), so a policy reads `threshold: 0.68`, not 0.6778959889.
    """
    observed = key[np.isfinite(key)]
    if observed.size == 0:
        return np.empty(0)
    quantiles = np.quantile(observed, np.arange(1, n_thresholds + 1) / n_thresholds)
    distinct = np.unique(observed)
    below = np.searchsorted(distinct, quantiles, side="left")  # keys < q: distinct[:below]
    short = [
        _shortest(distinct[b - 1] if b > 0 else -np.inf, distinct[b] if b < distinct.size else np.inf, q)
        for b, q in zip(below, quantiles, strict=True)
    ]
    return np.unique(short)


def _shortest(low: float, high: float, fallback: float) -> float:
    """The decimal with fewest digits in (low, high], or `fallback` when none has up to 12 digits."""
    for digits in range(13):
        scale = 10.0**digits
        if np.isfinite(low):
            candidate = float(np.floor(low * scale + 1.0) / scale)
        else:
            candidate = float(np.floor(high * scale) / scale)
        if low < candidate <= high:
            return candidate
    return float(fallback)


@dataclass(frozen=True)
class Inputs:
    """What every search reads, per (model, refine) variant of the route: `scores` (effective, 0 on
    error), `costs` (USD), `keys[(model, refine, measure)]` (escalate iff key < t, +inf never), the
    p_correct `maps`; and the candidate thresholds with each prompt's bucket, cached per level count."""

    variants: Mapping[tuple[str, bool], ModelArrays]
    scores: Mapping[tuple[str, bool], np.ndarray]
    costs: Mapping[tuple[str, bool], np.ndarray]
    keys: Mapping[tuple[str, bool, str], np.ndarray]
    maps: Mapping[tuple[str, bool], CalibrationMap]
    buckets: dict[tuple[str, bool, str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        data: CalibrationData,
        route: Sequence[str],
        measures: Sequence[str],
        scorer_cut: float | None,
        refine: Sequence[bool],
        calibration: Mapping[tuple[str, bool], CalibrationMap] | None,
    ) -> Inputs:
        """Raises CalibrationDataError for p_correct values without their calibration maps."""
        variants = {
            (m, r): data.arrays(m, r)
            for m in route
            for r in dict.fromkeys(refine)
            if (data.refined if r else data.plain).get(m) is not None
        }
        keys = {
            (m, r, name): a.key(name)
            for (m, r), a in variants.items()
            for name in measures
            if name in a.measures
        }
        maps = dict(calibration or {})
        unmapped = sorted({(m, r) for (m, r, name) in keys if name == "p_correct"} - set(maps))
        if unmapped:
            raise CalibrationDataError(f"p_correct values without their calibration maps for {unmapped}")
        scores = {v: a.effective_score(scorer_cut) for v, a in variants.items()}
        return cls(variants, scores, {v: a.cost_usd for v, a in variants.items()}, keys, maps)

    def bucketed(self, opt: Option, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(thresholds in key units, ascending; each prompt's bucket: how many lie at or below its key)."""
        cache = (opt.model, opt.refine, str(opt.measure), t)
        if cache not in self.buckets:
            key = self.keys[(opt.model, opt.refine, str(opt.measure))]
            thr = candidate_thresholds(key, t)
            self.buckets[cache] = (thr, np.searchsorted(thr, key, side="right"))
        return self.buckets[cache]


def sweep(
    data: CalibrationData,
    route: Sequence[str],
    measures: Sequence[str] = RAW_MEASURES,
    n_thresholds: int = 100,
    scorer_cut: float | None = None,
    refine: Sequence[bool] = (False, True),
    entries: Sequence[str] | None = None,
    calibration: Mapping[tuple[str, bool], CalibrationMap] | None = None,
    max_points: int = 5_000_000,
) -> SweepResult:
    """Evaluate every policy over `route` (models in escalation order): each entry model (default
    all), each depth from single model to the end of the route, each measure in `measures` present in
    the data and each refinement setting in `refine` available for the model, every candidate
    threshold per tier (see `candidate_thresholds`). `calibration[(model, refine)]` is recorded in
    the policies that use a `p_correct` data array (see herd.policy.confidence.add_p_correct).

    Exact: point i equals `replay(data, result.policy(i), scorer_cut)`. Raises CalibrationDataError
    for models missing from the data, an empty route, or p_correct values without their maps.
    """
    data.check_route(route)
    n = data.n
    inputs = Inputs.of(data, route, measures, scorer_cut, refine, calibration)
    variants, keys, scores, costs, maps = (
        inputs.variants,
        inputs.keys,
        inputs.scores,
        inputs.costs,
        inputs.maps,
    )
    bucketed = inputs.bucketed

    families: list[Family] = []
    quality: list[np.ndarray] = []
    cost: list[np.ndarray] = []
    rates: list[np.ndarray] = []
    tiers: list[np.ndarray] = []
    offset = 0
    width = len(route) - 1
    starts = range(len(route)) if entries is None else [list(route).index(e) for e in entries]
    for start in starts:
        suffix = list(route)[start:]
        for depth in range(1, len(suffix) + 1):
            escalating = [
                [
                    Option(m, cast(Measure, name), r)
                    for r in dict.fromkeys(refine)
                    for name in measures
                    if (m, r, name) in keys
                ]
                for m in suffix[: depth - 1]
            ]
            finals = [
                Option(suffix[depth - 1], None, r)
                for r in dict.fromkeys(refine)
                if (suffix[depth - 1], r) in variants
            ]
            combos = list(itertools.product(*escalating, finals))
            t = n_thresholds
            if combos and depth > 1 and len(combos) * (t + 1) ** (depth - 1) > max_points:
                t = max(1, int((max_points / len(combos)) ** (1.0 / (depth - 1))) - 1)
            for options in combos:
                grids = [bucketed(o, t) for o in options[:-1]]
                if any(len(thr) == 0 for thr, _ in grids):
                    continue
                q, c, esc = grid_sums(options, grids, scores, costs, n)
                family = Family(tuple(options), policy_thresholds(options, grids), offset, q.shape)
                families.append(family)
                quality.append(q.ravel() / n)
                cost.append(c.ravel() / n * 1000.0)
                padded = np.full((family.size, width), np.nan)
                padded[:, : depth - 1] = cast(np.ndarray, esc).reshape(family.size, depth - 1)
                rates.append(padded)
                tiers.append(np.full(family.size, depth))
                offset += family.size
    return SweepResult(
        data.task,
        tuple(route),
        tuple(families),
        np.concatenate(quality),
        np.concatenate(cost),
        np.concatenate(rates),
        np.concatenate(tiers),
        maps,
    )


def policy_thresholds(
    options: Sequence[Option], grids: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, ...]:
    """Each escalating tier's candidate thresholds in its measure's own units (keys negate uncertainties)."""
    return tuple(
        thr if is_confidence(str(o.measure)) else -thr for (thr, _), o in zip(grids, options, strict=False)
    )


def grid_sums(
    options: Sequence[Option],
    grids: Sequence[tuple[np.ndarray, np.ndarray]],
    scores: Mapping[tuple[str, bool], np.ndarray],
    costs: Mapping[tuple[str, bool], np.ndarray],
    n: int,
    rates: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quality sum, cost sum (USD) and escalation rates (None unless `rates`) over the threshold
    grid of one family."""
    shape = tuple(len(thr) for thr, _ in grids)
    d = len(options)
    s = [scores[(o.model, o.refine)] for o in options]
    c = [costs[(o.model, o.refine)] for o in options]
    total_q = np.full(shape, s[0].sum())
    total_c = np.full(shape, c[0].sum())
    reach = [np.full(shape, float(n))]
    index = np.zeros(n, dtype=np.int64)
    dims: list[int] = []
    for k in range(1, d):
        index = index * (shape[k - 1] + 1) + grids[k - 1][1]
        dims.append(shape[k - 1] + 1)
        weights = [s[k] - s[k - 1], c[k], *([np.ones(n)] if rates else [])]
        sums = []
        for w in weights:
            h = np.bincount(index, weights=w, minlength=int(np.prod(dims))).reshape(dims)
            for axis in range(k):
                h = np.cumsum(h, axis=axis)
            h = h[tuple(slice(0, size - 1) for size in dims)]
            sums.append(h.reshape(h.shape + (1,) * (d - 1 - k)))
        total_q = total_q + sums[0]
        total_c = total_c + sums[1]
        if rates:
            reach.append(np.broadcast_to(sums[2], shape))
    if not rates:
        return total_q, total_c, None
    with np.errstate(invalid="ignore", divide="ignore"):
        esc = (
            np.stack([reach[i + 1] / reach[i] for i in range(d - 1)], axis=-1)
            if d > 1
            else np.empty(shape + (0,))
        )
    return total_q, total_c, esc

"""The policy search that scales with the herd: every order, entry, skip and depth over N models,
with the exact Pareto front of the searched space on the calibration prompts, streamed.

The space (stated, so that "exact" has a meaning):

- **Model sequences**: with `order="cost"` (the default) every non-empty subset of the models, run
  cheapest first by mean attributed cost on the calibration prompts (ties: route order), so every
  entry model, every depth and every skip (1B -> 70B without 8B) is in it: 2^N - 1 sequences.
  `order="route"`: the same subsets in the route's order; `order="any"`: every ordering of every
  subset (sum over d of N!/(N-d)!: meant for small herds).
- **Per tier**: refinement on or off where the data has both (`refine`); when that makes more
  than `prune_above` (5,000) families, a refinement-on variant that another variant of the route
  beats on its own at no more cost is left out (`undominated_variants`: 9 models with refinement
  everywhere make 30,194 families, 2,579 so pruned); per escalating tier a measure and a
  threshold. In cascades of up to `every_measure_to` tiers (default 3) every measure in `measures`
  is tried at every tier; in deeper ones each (model, refinement) variant escalates on its most
  informative measure, the one ranking its right answers above its wrong ones best (AUROC on the
  calibration prompts), since 4 measures on 8 escalating tiers alone would be 65,536 families per
  sequence.
- **Thresholds**: `candidate_thresholds` (herd.policy.sweep): quantiles of the measure's observed
  values at levels 1/T .. 1, deduplicated, so only distinct effects are kept. T = `n_thresholds`
  (100) for a 2- or 3-tier cascade; a deeper one's grid is coarsened so its threshold combinations
  stay within `grid_points` (10,000), or within the depth's share of `depth_points` (2,000,000 over
  the depth's families, at most a quarter of it per family) when that allows more:
  `thresholds_per_tier`. On 9 models, 4 tiers get 25 levels per tier and 9 tiers 5; on 5 models,
  73 and 26.

How it is fast: each family (a model sequence with its per-tier options) is evaluated over its whole
threshold grid at once (`_sums`: one histogram and d - 1 cumulative sums, O(d·n + d·grid), the
formula of herd.policy.sweep; along the short axes of a deep grid the sums are slice additions,
where numpy's cumsum is several times slower), then only the points not already dominated by the
front found so far are kept (a binary search per point); those are merged into the front in
batches. Nothing but the front is ever stored: memory is O(front + one family's grid), not
O(policies). Dropping a point weakly dominated by a point already found never changes the front, so
the result is the exact front of the space; of policies with the same cost and quality the first
found (fewest tiers) is kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy import stats

from herd.policy.data import CalibrationData, CalibrationDataError
from herd.policy.spec import RAW_MEASURES, CalibrationMap, Measure, Policy
from herd.policy.sweep import Family, Inputs, Option, pareto_front, policy_thresholds

ORDERS = ("cost", "route", "any")
# Survivors buffered before a merge into the front: merging sorts front + buffer, so rarer is
# cheaper, but a fresher front filters more. Bins of the front's quality-by-cost table.
_MERGE_AT = 5_000
_BINS = 4096


@dataclass(frozen=True)
class SearchResult:
    """The Pareto front of a search, cheapest first. `quality`, `cost_per_1k` (USD per 1k prompts),
    `n_tiers`: shape (F,) over the F front points; `searched`: policies evaluated; `families`:
    how many model sequences with their per-tier options were evaluated. Point i is `policy(i)`, and equals
    `replay(data, policy(i), scorer_cut)` on the prompts searched."""

    task: str
    route: tuple[str, ...]
    quality: np.ndarray
    cost_per_1k: np.ndarray
    n_tiers: np.ndarray
    searched: int
    families: int
    calibration: Mapping[tuple[str, bool], CalibrationMap]
    _members: tuple[tuple[Family, int], ...]

    def __len__(self) -> int:
        return len(self.quality)

    def policy(self, i: int) -> Policy:
        """The Policy of front point `i` (0 <= i < len(self))."""
        family, cell = self._members[int(i)]
        return family.policy(self.task, cell, self.calibration)

    def front(self) -> np.ndarray:
        """Indices of the Pareto-optimal points by ascending cost: all of them."""
        return np.arange(len(self))


def thresholds_per_tier(
    depth: int, n_thresholds: int, grid_points: int, families: int = 1, depth_points: int = 0
) -> int:
    """Quantile levels per escalating tier of a `depth`-tier cascade: `n_thresholds`, lowered so that
    one family's grid, levels^(depth - 1), stays within max(grid_points, n_thresholds^2) (a 3-tier
    cascade keeps its full grid), unless the depth's `families` together fit `depth_points` with
    more levels (a depth with few families gets a finer grid, one family at most a quarter of
    `depth_points`); 0 for one tier."""
    if depth <= 1:
        return 0
    budget = max(grid_points, n_thresholds**2, min(depth_points // max(families, 1), depth_points // 4))
    levels = int(math.floor(budget ** (1.0 / (depth - 1)) + 1e-9))
    return max(1, min(n_thresholds, levels))


def sequences(models: Sequence[str], depth: int, order: str) -> Iterator[tuple[str, ...]]:
    """The model sequences of `depth` tiers: subsets in the order of `models`, or (`order="any"`)
    every ordering of every subset."""
    if order == "any":
        return itertools.permutations(models, depth)
    return itertools.combinations(models, depth)


def best_measures(inputs: Inputs, cut: float = 0.5) -> dict[tuple[str, bool], str]:
    """Per (model, refine) variant: the measure whose key ranks its right answers (score >= `cut`)
    above its wrong ones best, by AUROC (Hanley & McNeil 1982: the Mann-Whitney U over P·N, ties
    counted half) on the prompts where the key is finite; ties go to the first in the inputs' order.
    A variant with no right or no wrong answer scores 0.5 on every measure."""
    best: dict[tuple[str, bool], tuple[float, str]] = {}
    for (model, refine, name), key in inputs.keys.items():
        finite = np.isfinite(key)
        right = inputs.scores[(model, refine)][finite] >= cut
        p, q = int(right.sum()), int((~right).sum())
        auc = 0.5
        if p and q:
            ranks = stats.rankdata(key[finite])
            auc = (float(ranks[right].sum()) - p * (p + 1) / 2) / (p * q)
        if (model, refine) not in best or auc > best[(model, refine)][0]:
            best[(model, refine)] = (auc, name)
    return {variant: name for variant, (_, name) in best.items()}


def undominated_variants(inputs: Inputs) -> set[tuple[str, bool]]:
    """The (model, refine) variants the search uses: every refinement-off variant, and a
    refinement-on one unless another variant of the route dominates it on its own, i.e. costs no
    more in total and scores at least as much on the calibration prompts (strictly better in one, or
    refinement off). Refinement multiplies the families (two choices per tier), and a refinement
    that another model beats alone at no more cost rarely earns its place in a cascade: this
    restriction of the space is what keeps refinement on/off tractable on a large herd."""
    totals = {v: (float(inputs.costs[v].sum()), float(inputs.scores[v].sum())) for v in inputs.variants}

    def dominated(v: tuple[str, bool]) -> bool:
        cost, score = totals[v]
        return any(
            u != v and c <= cost and q >= score and (c < cost or q > score or not u[1])
            for u, (c, q) in totals.items()
        )

    return {v for v in inputs.variants if not v[1] or not dominated(v)}


class _Front:
    """The front found so far (cost ascending, quality strictly ascending) and a buffer of points
    not dominated by it when they were offered; `members[k]`: (family, cell) of point k.

    Offered points are first checked against a table of the front's quality at `_BINS` evenly
    spaced costs, each point against the edge one bin below its own (so at or below its cost): a
    point no better than that is dominated for sure, with one multiply per point; only the others
    get the exact binary search."""

    def __init__(self) -> None:
        self.cost = np.empty(0)
        self.quality = np.empty(0)
        self.tiers = np.empty(0, dtype=np.int64)
        self.members: list[tuple[Family, int]] = []
        self.pending: list[tuple[np.ndarray, np.ndarray, Family]] = []
        self.pending_points = 0
        self.table: tuple[float, float, np.ndarray] | None = None

    def offer(self, cost: np.ndarray, quality: np.ndarray, family: Family) -> None:
        """Keep the family's points (C-order cells) that no front point weakly dominates."""
        cells = np.arange(cost.size)
        if self.table is not None:
            low, width, floor = self.table
            below = np.floor((cost - low) / width).astype(np.int64) - 1
            sure = (below >= 0) & (quality <= floor[np.clip(below, 0, _BINS - 1)])
            cells = cells[~sure]
            before = np.searchsorted(self.cost, cost[cells], side="right") - 1  # cheapest-or-equal point
            dominated = (before >= 0) & (self.quality[np.maximum(before, 0)] >= quality[cells])
            cells = cells[~dominated]
        if cells.size > 1:
            cells = cells[pareto_front(np.column_stack([cost[cells], quality[cells]]))]
        if cells.size:
            self.pending.append((cells, np.column_stack([cost[cells], quality[cells]]), family))
            self.pending_points += cells.size
            if self.pending_points >= _MERGE_AT:
                self.merge()

    def merge(self) -> None:
        """Fold the buffer into the front; of equal points the earlier (front first) is kept."""
        if not self.pending:
            return
        members = self.members + [(f, int(c)) for cells, _, f in self.pending for c in cells]
        points = np.vstack([np.column_stack([self.cost, self.quality]), *(p for _, p, _ in self.pending)])
        tiers = np.concatenate(
            [self.tiers, *(np.full(len(cells), len(f.options)) for cells, _, f in self.pending)]
        )
        keep = pareto_front(points)
        self.cost, self.quality, self.tiers = points[keep, 0], points[keep, 1], tiers[keep]
        self.members = [members[int(k)] for k in keep]
        self.pending, self.pending_points = [], 0
        low, high = float(self.cost[0]), float(self.cost[-1])
        width = (high - low) / _BINS if high > low else 1.0
        edges = low + width * np.arange(_BINS)
        self.table = (low, width, self.quality[np.searchsorted(self.cost, edges, side="right") - 1])


def _sums(
    options: Sequence[Option],
    grids: Sequence[tuple[np.ndarray, np.ndarray]],
    scores: Mapping[tuple[str, bool], np.ndarray],
    costs: Mapping[tuple[str, bool], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Quality and cost sums (USD) of one family over its threshold grid, shape (T_0, ..., T_(d-2)).

    The formula of herd.policy.sweep (a prompt reaches tier k iff b_i <= m_i for every earlier
    tier i) in one histogram instead of one per tier: tier k's weight of a prompt goes to the cell
    (b_0, ..., b_(k-1), 0, ..., 0); a cumulative sum along every axis then sums it over
    b_i <= m_i for i < k and spreads it to every m_i for i >= k, which is the formula. A prompt whose
    bucket at tier i is T_i (at or above every threshold) reaches no tier past i at any grid point,
    so it leaves there. O(d·n + d·grid) with d - 1 cumulative sums, not d(d - 1)/2.
    """
    shape = tuple(len(thr) for thr, _ in grids)
    s = [scores[(o.model, o.refine)] for o in options]
    c = [costs[(o.model, o.refine)] for o in options]
    strides = [int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
    alive: np.ndarray | None = None  # None: every prompt (no gather until one leaves)
    index = np.zeros(len(s[0]), dtype=np.int64)
    cells: list[np.ndarray] = []
    weights_q: list[np.ndarray] = []
    weights_c: list[np.ndarray] = []
    for k in range(1, len(options)):
        bucket = grids[k - 1][1] if alive is None else grids[k - 1][1][alive]
        reaches = bucket < shape[k - 1]
        if not reaches.all():
            alive = np.flatnonzero(reaches) if alive is None else alive[reaches]
            index, bucket = index[reaches], bucket[reaches]
        index = index + bucket * strides[k - 1]
        if index.size == 0:
            break
        cells.append(index)
        if alive is None:
            weights_q.append(s[k] - s[k - 1])
            weights_c.append(c[k])
        else:
            weights_q.append(s[k][alive] - s[k - 1][alive])
            weights_c.append(c[k][alive])
    size = int(np.prod(shape))
    at = np.concatenate(cells) if cells else np.zeros(0, dtype=np.int64)
    totals = []
    for weights, base in ((weights_q, s[0].sum()), (weights_c, c[0].sum())):
        h = np.bincount(at, weights=np.concatenate(weights) if weights else None, minlength=size)
        h = _cumsum_every_axis(h.astype(float, copy=False).reshape(shape))
        h += base
        totals.append(h)
    return totals[0], totals[1]


# An axis this short is summed by slice additions (numpy's cumsum along a short, strided axis of a
# many-dimensional grid is several times slower); a longer one by np.cumsum.
_SHORT_AXIS = 32


def _cumsum_every_axis(h: np.ndarray) -> np.ndarray:
    """`h` (float, C-contiguous, modified in place) cumulatively summed along every axis in turn. Bit
    for bit np.cumsum's result: along an axis, slice i becomes slice i - 1 + slice i, in the same order."""
    for axis, length in enumerate(h.shape):
        inner = math.prod(h.shape[axis + 1 :])
        if length >= _SHORT_AXIS or inner == 1:
            np.cumsum(h, axis=axis, out=h)
            continue
        view = h.reshape(math.prod(h.shape[:axis]), length, inner)
        for i in range(1, length):
            view[:, i] += view[:, i - 1]
    return h


# A model sequence's options: per escalating tier, then for its final tier.
_Shape = tuple[list[list[Option]], list[Option]]


def _count(shapes: list[_Shape]) -> int:
    """How many families (sequence and per-tier options) `shapes` make."""
    return sum(math.prod(len(t) for t in tiers) * len(finals) for tiers, finals in shapes)


def search(
    data: CalibrationData,
    route: Sequence[str],
    measures: Sequence[str] = RAW_MEASURES,
    n_thresholds: int = 100,
    scorer_cut: float | None = None,
    refine: Sequence[bool] = (False, True),
    calibration: Mapping[tuple[str, bool], CalibrationMap] | None = None,
    order: str = "cost",
    every_measure_to: int = 3,
    grid_points: int = 10_000,
    depth_points: int = 2_000_000,
    prune_refinement: bool | None = None,
    prune_above: int = 5_000,
) -> SearchResult:
    """The exact Pareto front (quality, cost) of every policy in the space described in the module
    docstring over the models of `route`, on `data`'s prompts. `measures`, `refine`, `calibration`
    and `scorer_cut` as in herd.policy.sweep.sweep; `prune_refinement`: leave out the refinement-on
    variants another variant dominates on its own (`undominated_variants`); None (the default) does
    so only when the whole space has more than `prune_above` families (a 5-model herd with
    refinement everywhere has about 1,600, searched whole in about a second; 9 models about 30,000:
    a minute of CPU whole, 3 s pruned; benchmarks/policy_search.py). Raises
    CalibrationDataError for models missing from the data, an empty route, p_correct values without
    their maps; ValueError for an unknown `order` or a count below 1."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r} (one of {', '.join(ORDERS)})")
    if min(n_thresholds, every_measure_to, grid_points) < 1:
        raise ValueError("n_thresholds, every_measure_to and grid_points must be at least 1")
    data.check_route(route)
    n = data.n
    inputs = Inputs.of(data, route, measures, scorer_cut, refine, calibration)
    informative = best_measures(inputs)
    models = list(route)
    if order == "cost":
        mean_cost = {
            m: float(inputs.costs[(m, False)].mean()) if (m, False) in inputs.costs else math.inf
            for m in models
        }
        models.sort(key=lambda m: (mean_cost[m], route.index(m)))

    def space(kept: set[tuple[str, bool]]) -> list[list[_Shape]]:
        """Per depth, per model sequence: its escalating tiers' options and its final tier's."""
        variants = {m: [r for r in dict.fromkeys(refine) if (m, r) in kept] for m in models}

        def escalating(model: str, depth: int) -> list[Option]:
            return [
                Option(model, cast(Measure, name), r)
                for r in variants[model]
                for name in measures
                if (model, r, name) in inputs.keys
                and (depth <= every_measure_to or informative[(model, r)] == name)
            ]

        return [
            [
                (
                    [escalating(m, depth) for m in sequence[:-1]],
                    [Option(sequence[-1], None, r) for r in variants[sequence[-1]]],
                )
                for sequence in sequences(models, depth, order)
            ]
            for depth in range(1, len(models) + 1)
        ]

    whole = space(set(inputs.variants))
    prune = prune_refinement
    if prune is None:
        prune = sum(_count(shapes) for shapes in whole) > prune_above
    depths = space(undominated_variants(inputs)) if prune else whole
    front = _Front()
    searched = families = 0
    for depth, shapes in enumerate(depths, start=1):
        levels = thresholds_per_tier(depth, n_thresholds, grid_points, _count(shapes), depth_points)
        for tiers, finals in shapes:
            for options in itertools.product(*tiers, finals):
                grids = [inputs.bucketed(o, levels) for o in options[:-1]]
                if any(len(thr) == 0 for thr, _ in grids):
                    continue  # a measure never observed never escalates: the shorter cascade
                q, c = _sums(options, grids, inputs.scores, inputs.costs)
                family = Family(tuple(options), policy_thresholds(options, grids), 0, q.shape)
                front.offer(c.ravel() / n * 1000.0, q.ravel() / n, family)
                searched += family.size
                families += 1
    front.merge()
    if not front.members:
        raise CalibrationDataError(f"no policy over {list(route)} could be evaluated")
    return SearchResult(
        data.task,
        tuple(route),
        front.quality,
        front.cost,
        front.tiers,
        searched,
        families,
        dict(inputs.maps),
        tuple(front.members),
    )

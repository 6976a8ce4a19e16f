"""herd.policy.search: its Pareto front equals an exhaustive enumeration of the same space, policy by
policy replayed, on many small random herds (seeded); it contains today's sweep; its points replay."""

from __future__ import annotations

import itertools
from typing import cast

import numpy as np
import pytest

import herd.policy.search as search_module
from herd.policy.data import CalibrationData, ModelArrays
from herd.policy.replay import replay
from herd.policy.search import best_measures, search, sequences, thresholds_per_tier, undominated_variants
from herd.policy.spec import CalibrationMap, Measure, Policy, Tier, is_confidence
from herd.policy.sweep import Inputs, candidate_thresholds, pareto_front, sweep
from herd.policy.synthetic import synthetic

MEASURES = ("first_token_margin", "mean_entropy")


def _herd(seed: int, models: int, refined: bool) -> CalibrationData:
    """A small random herd: 20-60 prompts; scores in {0, 0.5, 1} and integer costs, so that every
    sum is exact and fronts compare without rounding; some errors and missing measures."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 61))

    def arrays() -> ModelArrays:
        ok = rng.random(n) > 0.05
        score = np.where(ok, rng.integers(0, 3, n) / 2.0, np.nan)
        measures = {
            "first_token_margin": np.round(rng.random(n), 2),
            "mean_entropy": np.round(rng.exponential(1.0, n), 2),
        }
        for values in measures.values():
            values[rng.random(n) < 0.05] = np.nan
        return ModelArrays(
            score, rng.integers(0, 20, n).astype(float) * (1 + rng.integers(0, 4)), ok, measures
        )

    names = [f"m{i}" for i in range(models)]
    plain = {m: arrays() for m in names}
    refine = {m: arrays() for m in names if refined and rng.random() < 0.7}
    return CalibrationData("t", np.arange(n), plain, refine)


def _exhaustive(
    data: CalibrationData,
    route: list[str],
    order: str,
    n_thresholds: int,
    every: int,
    grid: int,
    budget: int,
    prune: bool,
) -> np.ndarray:
    """(cost, quality) of the front of every policy of the space, each replayed on its own."""
    inputs = Inputs.of(data, route, MEASURES, None, (False, True), None)
    informative = best_measures(inputs)
    kept = undominated_variants(inputs) if prune else set(inputs.variants)
    models = sorted(route, key=lambda m: (data.plain[m].cost_usd.mean(), route.index(m)))
    models = models if order == "cost" else route
    points = []
    for depth in range(1, len(route) + 1):
        # Per sequence, per tier: the (refine, measure) options, then how many families they make.
        shapes = []
        for sequence in sequences(models, depth, order):
            per_tier = []
            for i, model in enumerate(sequence):
                variants = [r for r in (False, True) if (model, r) in kept]
                names = [None] if i == depth - 1 else MEASURES
                per_tier.append(
                    [
                        (r, name)
                        for r, name in itertools.product(variants, names)
                        if name is None or depth <= every or informative[(model, r)] == name
                    ]
                )
            shapes.append((sequence, per_tier))
        families = sum(int(np.prod([len(t) for t in per_tier])) for _, per_tier in shapes)
        levels = thresholds_per_tier(depth, n_thresholds, grid, families, budget)
        for sequence, per_tier in shapes:
            tiers_options = []
            for model, options in zip(sequence, per_tier, strict=True):
                tiers = []
                for r, name in options:
                    if name is None:
                        tiers.append(Tier(model=model, refine=r))
                        continue
                    for t in candidate_thresholds(inputs.keys[(model, r, name)], levels):
                        threshold = float(t if is_confidence(name) else -t)
                        tiers.append(
                            Tier(model=model, measure=cast(Measure, name), threshold=threshold, refine=r)
                        )
                tiers_options.append(tiers)
            for chosen in itertools.product(*tiers_options):
                result = replay(data, Policy(task="t", entry=sequence[0], tiers=list(chosen)))
                points.append((result.cost_per_1k, result.quality))
    everything = np.array(points)
    return everything[pareto_front(everything)]


# (seed, models, refined, order, quantile levels, every_measure_to, grid_points, depth_points):
# 3 models in any order with refinement; 4 cheapest first, deep ones on their best measure, grids
# coarsened by depth (depth_points 0) or by the families per depth (depth_points 60).
CASES = (
    [(seed, 3, True, "any", 4, 3, 16, 0) for seed in range(10)]
    + [(100 + seed, 4, False, "cost", 3, 2, 4, 0) for seed in range(10)]
    + [(200 + seed, 4, True, "cost", 3, 2, 1, 60) for seed in range(10)]
)


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize(("seed", "models", "refined", "order", "levels", "every", "grid", "budget"), CASES)
def test_the_front_equals_an_exhaustive_enumeration(
    seed: int,
    models: int,
    refined: bool,
    order: str,
    levels: int,
    every: int,
    grid: int,
    budget: int,
    prune: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Odd seeds merge after every family, so later families meet the front's table and binary search.
    monkeypatch.setattr(search_module, "_MERGE_AT", 1 if seed % 2 else 5_000)
    data = _herd(seed, models, refined)
    route = data.models
    found = search(
        data,
        route,
        MEASURES,
        levels,
        order=order,
        every_measure_to=every,
        grid_points=grid,
        depth_points=budget,
        prune_refinement=prune,
    )
    truth = _exhaustive(data, route, order, levels, every, grid, budget, prune)
    got = np.column_stack([found.cost_per_1k, found.quality])
    assert got.shape == truth.shape, (got, truth)
    np.testing.assert_allclose(got, truth, rtol=1e-12, atol=1e-12)
    for i in range(len(found)):  # every point is its policy, replayed
        result = replay(data, found.policy(i))
        assert (result.cost_per_1k, result.quality) == pytest.approx((got[i, 0], got[i, 1]), abs=1e-12)
        assert len(found.policy(i).tiers) == found.n_tiers[i]


def test_the_space_counts_what_the_rules_say() -> None:
    # 3 models in any order, no refinement, one measure, one threshold level: 3 singles, 6 pairs
    # with 1 threshold each, 6 triples with 1 x 1: 15 policies.
    data = _herd(7, 3, refined=False)
    found = search(data, data.models, ("first_token_margin",), 1, refine=(False,), order="any")
    assert found.searched == 15 and found.families == 15
    # Cost order: subsets only (1 + 3 + 3 = 7 families for 3 models), every skip among them.
    cost = search(data, data.models, ("first_token_margin",), 1, refine=(False,))
    assert cost.families == 7
    assert [thresholds_per_tier(d, 100, 10_000) for d in range(1, 10)] == [0, 100, 100, 21, 10, 6, 4, 3, 3]
    # A depth with few families gets a finer grid from the depth's budget: 2,000,000 / 5 = 73^3.
    assert thresholds_per_tier(4, 100, 10_000, families=5, depth_points=2_000_000) == 73


def test_the_front_contains_todays_sweep_and_finds_skips() -> None:
    # Three models cheapest first: today's sweep (every contiguous sub-route) is part of the space, so
    # each of its front points is matched or beaten; the search also tries small -> large.
    data = synthetic(3000, seed=3)
    route = ["small", "medium", "large"]
    old, new = sweep(data, route, n_thresholds=30), search(data, route, n_thresholds=30)
    old_front = old.front()
    for cost, quality in zip(old.cost_per_1k[old_front], old.quality[old_front], strict=True):
        cheaper = new.cost_per_1k <= cost + 1e-12
        assert cheaper.any() and new.quality[cheaper].max() >= quality - 1e-12
    assert new.searched > old.searched
    # A medium model no better than the small one at ten times its cost: a skip makes the front.
    useless = synthetic(3000, skills=(0.0, 0.0, 2.0), usd=(1e-6, 1e-5, 2.5e-5), seed=3)
    found = search(useless, route, n_thresholds=30)
    fronts = [found.policy(i).models for i in range(len(found))]
    assert ["small", "large"] in fronts


def test_deep_cascades_use_each_models_most_informative_measure() -> None:
    data = synthetic(2000, models=("a", "b", "c", "d"), skills=(0, 1, 2, 3), usd=(1, 2, 3, 4), seed=5)
    # b's first-token margin carries no signal: shuffle it, and its best measure is an entropy.
    b = data.plain["b"]
    shuffled = np.random.default_rng(0).permutation(b.measures["first_token_margin"])
    measures = {**b.measures, "first_token_margin": shuffled}
    plain = {**data.plain, "b": ModelArrays(b.score, b.cost_usd, b.ok, measures)}
    data = CalibrationData(data.task, data.prompt_ids, plain)
    inputs = Inputs.of(data, data.models, ("first_token_margin", "mean_entropy"), None, (False,), None)
    assert best_measures(inputs)[("b", False)] == "mean_entropy"
    found = search(data, data.models, ("first_token_margin", "mean_entropy"), 20, every_measure_to=2)
    for i in range(len(found)):
        tiers = found.policy(i).tiers
        if len(tiers) > 2:
            assert all(t.measure != "first_token_margin" for t in tiers if t.model == "b")


def test_p_correct_maps_are_carried_and_bad_arguments_refused() -> None:
    data = synthetic(500, seed=1)
    p = {("small", False): data.plain["small"].measures["first_token_margin"]}
    with_p = data.with_measure("p_correct", p)
    cal = CalibrationMap(measure="first_token_margin", x=[0.0, 1.0], y=[0.0, 1.0])
    found = search(with_p, ["small", "large"], ("p_correct",), 10, calibration={("small", False): cal})
    assert any(found.policy(i).calibration for i in range(len(found)))
    with pytest.raises(ValueError, match="unknown order"):
        search(data, ["small"], order="random")
    with pytest.raises(ValueError, match="at least 1"):
        search(data, ["small"], n_thresholds=0)


def test_a_refinement_another_variant_beats_alone_at_no_more_cost_leaves_the_space() -> None:
    """Totals (cost, score) over 4 prompts: a (4, 1), a refined (12, 2), b (8, 3), b refined (16, 4),
    c (8, 3) and c refined (8, 3), a tie with c: a refined is dominated by b; b refined is the best
    alone; c refined ties c, refinement off, so it goes. Refinement-off variants always stay."""

    def arrays(cost: float, right: int) -> ModelArrays:
        score = np.array([1.0] * right + [0.0] * (4 - right))
        return ModelArrays(score, np.full(4, cost / 4), np.ones(4, dtype=bool), {"first_token_margin": score})

    plain = {"a": arrays(4, 1), "b": arrays(8, 3), "c": arrays(8, 3)}
    refined = {"a": arrays(12, 2), "b": arrays(16, 4), "c": arrays(8, 3)}
    data = CalibrationData("t", np.arange(4), plain, refined)
    inputs = Inputs.of(data, data.models, MEASURES, None, (False, True), None)
    assert undominated_variants(inputs) == {("a", False), ("b", False), ("c", False), ("b", True)}
    pruned = search(data, data.models, MEASURES, 4, prune_refinement=True)
    whole = search(data, data.models, MEASURES, 4, prune_refinement=False)
    used = {(t.model, t.refine) for i in range(len(pruned)) for t in pruned.policy(i).tiers}
    assert not used & {("a", True), ("c", True)}
    assert whole.searched > pruned.searched
    # By default the whole space is searched while it is small, and pruned past `prune_above` families.
    assert search(data, data.models, MEASURES, 4).searched == whole.searched
    assert search(data, data.models, MEASURES, 4, prune_above=10).searched == pruned.searched

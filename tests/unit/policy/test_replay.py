from __future__ import annotations

import numpy as np
import pytest

from herd.policy.data import CalibrationData, CalibrationDataError
from herd.policy.replay import bootstrap, pareto_front, replay, sweep
from herd.policy.spec import CalibrationMap, Policy, Tier
from herd.policy.synthetic import synthetic

from .conftest import arrays, dataset

ROUTE = ["small", "medium", "large"]


def two_models() -> CalibrationData:
    small = arrays(
        score=[1.0, 0.0, 0.5, 0.0, 1.0],
        cost=[1.0, 1.0, 1.0, 2.0, 1.0],
        margin=[0.9, 0.1, 0.2, np.nan, 0.05],
        ok=[True, True, True, True, False],
    )
    large = arrays(score=[0.0, 1.0, 1.0, 1.0, 1.0], cost=10.0, margin=[0.5] * 5)
    return dataset({"small": small, "large": large})


def cascade(threshold: float) -> Policy:
    tiers = [Tier(model="small", measure="first_token_margin", threshold=threshold), Tier(model="large")]
    return Policy(task="t", entry="small", tiers=tiers)


def test_cascade_follows_the_live_rules() -> None:
    result = replay(two_models(), cascade(0.3))
    # row 0 confident: kept; rows 1, 2 escalate; row 3 has no margin: kept;
    # row 4 errored: it fails there and never escalates.
    assert result.final_tier.tolist() == [0, 1, 1, 0, 0]
    assert result.failed.tolist() == [False, False, False, False, True]
    assert result.score.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert result.cost_usd.tolist() == [1.0, 11.0, 11.0, 2.0, 1.0]
    assert result.quality == pytest.approx(0.6)
    assert result.cost_per_1k == pytest.approx(26.0 / 5 * 1000)
    assert result.escalation_rate[0] == pytest.approx(0.4)
    assert result.escalation_rate[1] == 0.0  # the last tier never escalates
    assert [result.source(i) for i in (0, 1, 4)] == ["small/answer", "large/answer", "small/error"]


def test_scorer_cut_turns_scores_into_accuracy() -> None:
    result = replay(two_models(), Policy.single("t", "small"), scorer_cut=0.6)
    assert result.score.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("refine", [False, True])
def test_single_model_policy_is_that_models_mean_score_and_cost(refine: bool) -> None:
    data = synthetic(n=2000, refined=True, error_rate=0.05, seed=3)
    for model in ROUTE:
        a = data.arrays(model, refine)
        result = replay(data, Policy.single("synthetic", model, refine))
        assert result.quality == np.where(a.ok, a.score, 0.0).mean()
        assert result.cost_per_1k == a.cost_usd.mean() * 1000.0
        assert result.failure_rate == (~a.ok).mean()


def test_sweep_points_equal_replay_of_their_policies() -> None:
    data = synthetic(n=1500, refined=True, seed=1)
    points = sweep(data, ROUTE, n_thresholds=20)
    assert points.n_tiers.max() == 3
    rng = np.random.default_rng(0)
    for i in [*rng.integers(0, len(points), 60), *range(len(points) - 5, len(points))]:
        result = replay(data, points.policy(int(i)))
        assert result.quality == pytest.approx(points.quality[i], abs=1e-12)
        assert result.cost_per_1k == pytest.approx(points.cost_per_1k[i], rel=1e-12)
        k = len(result.policy.tiers) - 1
        assert np.allclose(result.escalation_rate[:k], points.escalation_rate[i, :k], equal_nan=True)


def test_sweep_covers_every_entry_and_single_model() -> None:
    data = synthetic(n=500, seed=2)
    points = sweep(data, ROUTE, measures=["first_token_margin"], n_thresholds=10)
    singles = {points.policy(int(i)).to_text() for i in np.flatnonzero(points.n_tiers == 1)}
    assert singles == {Policy.single("synthetic", m).to_text() for m in ROUTE}
    assert {points.policy(i).entry for i in range(len(points))} == set(ROUTE)


def test_thresholds_are_short_decimals_with_the_same_effect() -> None:
    data = synthetic(n=800, seed=4)
    points = sweep(data, ["small", "large"], measures=["first_token_margin"], n_thresholds=10)
    for i in np.flatnonzero(points.n_tiers == 2):
        assert len(repr(points.policy(int(i)).tiers[0].threshold)) <= 9


def test_p_correct_from_the_policy_map() -> None:
    data = two_models()
    cal = CalibrationMap(measure="first_token_margin", x=[0.0, 1.0], y=[0.0, 1.0])
    tiers = [Tier(model="small", measure="p_correct", threshold=0.3), Tier(model="large")]
    policy = Policy(task="t", entry="small", tiers=tiers, calibration={"small": cal})
    assert replay(data, policy).final_tier.tolist() == replay(data, cascade(0.3)).final_tier.tolist()


def test_pareto_front() -> None:
    points = np.array([[1.0, 0.5], [2.0, 0.5], [2.0, 0.7], [3.0, 0.6], [0.5, 0.1], [4.0, 0.9], [np.nan, 1.0]])
    assert pareto_front(points).tolist() == [4, 0, 2, 5]


def test_bootstrap_contains_the_estimate_and_is_reproducible() -> None:
    data = synthetic(n=3000, seed=5)
    result = replay(
        data,
        Policy(
            task="synthetic",
            entry="small",
            tiers=[
                Tier(model="small", measure="first_token_margin", threshold=0.6),
                Tier(model="large"),
            ],
        ),
    )
    first, second = bootstrap(result), bootstrap(result)
    assert first == second
    for interval in (first.quality, first.cost_per_1k, first.escalation_rate[0]):
        assert interval.low <= interval.value <= interval.high
        assert interval.high - interval.low > 0


def test_missing_model_and_empty_data_are_clear_errors() -> None:
    with pytest.raises(CalibrationDataError, match="'huge'"):
        replay(two_models(), Policy.single("t", "huge"))
    with pytest.raises(CalibrationDataError, match="refinement on"):
        replay(two_models(), Policy.single("t", "small", refine=True))
    with pytest.raises(CalibrationDataError, match="no prompts"):
        dataset({"small": arrays(score=[], cost=[])})
    with pytest.raises(CalibrationDataError, match="unscored"):
        dataset({"small": arrays(score=[np.nan], cost=[1.0])})

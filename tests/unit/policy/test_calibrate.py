from __future__ import annotations

import numpy as np
import pytest

from herd.policy.calibrate import Match, MaxCostPer1k, MinQuality, UnreachableTargetError, choose, split
from herd.policy.data import CalibrationData, CalibrationDataError
from herd.policy.spec import Policy

from .conftest import arrays, dataset

N = 400
ROUTE = ["small", "large"]


def scripted(small_right: np.ndarray, large_right: np.ndarray, margin: np.ndarray) -> CalibrationData:
    """Small costs 1 per prompt, large 10; the large model's own margin is uninformative."""
    small = arrays(score=small_right.astype(float), cost=1e-6, margin=margin)
    large = arrays(score=large_right.astype(float), cost=1e-5, margin=np.full(len(margin), 0.5))
    return dataset({"small": small, "large": large})


def margins(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(N)


def test_large_model_worse_keeps_the_small_model_alone() -> None:
    margin = margins()
    small_right = margin > 0.1  # 90% right
    large_right = small_right & (margin > 0.4)  # right only where small is: escalation never helps
    data = scripted(small_right, large_right, margin)
    for target in (MinQuality(0.85), MaxCostPer1k(1.0), Match("large", at=1.0), Match("small", at=1.0)):
        choice = choose(data, ROUTE, target, method="point")
        assert choice.policy == Policy.single("t", "small"), target


def test_useless_small_model_gives_large_model_only() -> None:
    margin = margins(1)
    data = scripted(np.zeros(N, dtype=bool), margin > 0.2, margin)
    for target in (MinQuality(0.7), Match("large", at=1.0)):
        for method in ("point", "guarantee"):
            choice = choose(data, ROUTE, target, method=method)
            assert choice.policy == Policy.single("t", "large")
            assert choice.meets_target_on_held_out, choice.message
            assert choice.guaranteed == (method == "guarantee"), choice.message


def test_threshold_in_the_middle_wins() -> None:
    margin = margins(2)
    data = scripted(margin >= 0.5, np.ones(N, dtype=bool), margin)
    choice = choose(data, ROUTE, MinQuality(1.0), method="point")
    first = choice.policy.tiers[0]
    assert [t.model for t in choice.policy.tiers] == ROUTE
    assert first.measure == "first_token_margin"
    train_margin = margin[choice.train_rows]
    # Exact on the candidate grid (100 quantiles), so within a percentile of the ideal cut at 0.5.
    assert first.threshold is not None
    assert train_margin[train_margin < 0.5].max() < first.threshold <= 0.52
    assert choice.train_quality == 1.0
    assert choice.held_out.quality == pytest.approx(1.0, abs=0.02)
    assert choice.train_cost_per_1k < 1e-5 * 1000  # cheaper than the large model alone


def test_match_is_the_cheapest_at_the_share_of_the_models_quality() -> None:
    margin = margins(3)
    data = scripted(margin >= 0.5, np.ones(N, dtype=bool), margin)
    choice = choose(data, ROUTE, Match("large", at=0.8), method="point")
    assert choice.reference_quality is not None and choice.reference_quality[0] == 1.0
    assert 0.8 <= choice.train_quality < 0.85  # escalates just enough
    small_alone = choose(data, ROUTE, Match("large", at=0.4), method="point")
    assert small_alone.policy == Policy.single("t", "small")


def test_unreachable_targets_name_the_best_policy() -> None:
    margin = margins(4)
    data = scripted(margin > 0.3, margin > 0.2, margin)
    with pytest.raises(
        UnreachableTargetError, match=r"no policy reaches quality 0.95 on the 280 train prompts"
    ):
        choose(data, ROUTE, MinQuality(0.95), method="point")
    with pytest.raises(UnreachableTargetError, match=r"the cheapest is small alone"):
        choose(data, ROUTE, MaxCostPer1k(1e-4))


def test_held_out_miss_is_flagged_in_a_plain_sentence() -> None:
    train, held = split(N)
    small_right = np.zeros(N, dtype=bool)
    small_right[train] = True  # perfect on train, useless on held-out
    data = scripted(small_right, np.ones(N, dtype=bool), margins(5))
    choice = choose(data, ROUTE, MinQuality(0.9), method="point")
    assert choice.policy == Policy.single("t", "small")
    assert not choice.meets_target_on_held_out and choice.refused
    assert choice.message.startswith(f"On {len(held)} held-out prompts the policy's quality is 0 ")
    assert "below the target 0.9" in choice.message


def test_p_correct_policies_carry_their_maps() -> None:
    margin = margins(6)
    data = scripted(margin >= 0.5, np.ones(N, dtype=bool), margin)
    choice = choose(data, ROUTE, MinQuality(1.0), measures=["p_correct"], method="point")
    assert choice.policy.tiers[0].measure == "p_correct"
    assert Policy.from_text(choice.policy.to_text()) == choice.policy
    assert {r.model for r in choice.reliability} == set(ROUTE)


def test_bad_inputs() -> None:
    data = scripted(np.ones(1, dtype=bool), np.ones(1, dtype=bool), np.ones(1))
    for method in ("point", "guarantee"):
        with pytest.raises(CalibrationDataError, match="cannot be split"):
            choose(data, ROUTE, MinQuality(0.5), method=method)
    data = scripted(np.ones(N, dtype=bool), np.ones(N, dtype=bool), margins())
    with pytest.raises(CalibrationDataError, match="'huge'"):
        choose(data, ["small", "huge"], MinQuality(0.5))
    with pytest.raises(CalibrationDataError, match="not on the route"):
        choose(data, ROUTE, Match("huge"))


def test_split_is_reproducible_and_disjoint() -> None:
    train, held = split(1000, 0.7, seed=9)
    assert len(train) == 700 and len(held) == 300
    assert not set(train) & set(held)
    assert np.array_equal(train, split(1000, 0.7, seed=9)[0])

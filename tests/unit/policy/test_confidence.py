from __future__ import annotations

import numpy as np
import pytest

from herd.errors import UserError
from herd.policy.calibrate import split
from herd.policy.confidence import (
    NothingToCalibrateError,
    expected_calibration_error,
    fit_map,
    fit_maps,
    reliability,
)
from herd.policy.spec import CalibrationMap

from .conftest import arrays, dataset


def miscalibrated(n: int = 4000, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    margin = rng.random(n)
    right = rng.random(n) < margin**3  # the raw margin is badly overconfident
    entropy = -np.log(np.clip(margin, 1e-3, 1.0)) + rng.normal(0, 0.05, n)
    return margin, right, entropy


def test_maps_are_monotone_in_the_right_direction_and_serialisable() -> None:
    margin, right, entropy = miscalibrated()
    up = fit_map(margin, right, "first_token_margin")
    down = fit_map(entropy, right, "mean_entropy")
    grid = np.linspace(-1, 5, 500)
    assert np.all(np.diff(up.apply(grid)) >= 0)
    assert np.all(np.diff(down.apply(grid)) <= 0)
    again = CalibrationMap.model_validate_json(up.model_dump_json())
    assert np.array_equal(again.apply(margin), up.apply(margin))


def test_ece_after_is_at_most_before_on_held_out() -> None:
    margin, right, entropy = miscalibrated()
    data = dataset({"m": arrays(score=right.astype(float), cost=1.0, margin=margin, mean_entropy=entropy)})
    train, held = split(data.n)
    for measure in ("first_token_margin", "mean_entropy"):
        maps = fit_maps(data, measure, train)
        (rel,) = reliability(data, maps, held)
        assert rel.n == len(held)
        assert rel.ece_after <= rel.ece_before
        assert rel.ece_after < 0.05


def test_ece_definition() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95, np.nan])
    hit = np.array([0, 1, 1, 1, 1])
    # bin 1: conf 0.05, acc 0.5; bin 10: conf 0.95, acc 1.0 -> (2·0.45 + 2·0.05) / 4
    assert expected_calibration_error(p, hit) == pytest.approx(0.25)
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0


def test_no_usable_value_is_a_typed_user_error() -> None:
    # The demo falls back to the raw measures on this class, and herd calibrate prints it as one line:
    # neither reads its message.
    with pytest.raises(NothingToCalibrateError, match="no first_token_margin values to calibrate") as raised:
        fit_map(np.full(5, np.nan), np.ones(5, dtype=bool), "first_token_margin")
    assert isinstance(raised.value, UserError)

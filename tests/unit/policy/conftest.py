"""Scripted calibration data for the pure policy tests (no database, no model)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from herd.policy.data import CalibrationData, ModelArrays


def arrays(
    score: ArrayLike,
    cost: ArrayLike,
    margin: ArrayLike | None = None,
    ok: ArrayLike | None = None,
    **measures: ArrayLike,
) -> ModelArrays:
    score_arr = np.asarray(score, dtype=float)
    n = len(score_arr)
    cost_arr = np.broadcast_to(np.asarray(cost, dtype=float), (n,)).copy()
    values = {name: np.asarray(v, dtype=float) for name, v in measures.items()}
    if margin is not None:
        values["first_token_margin"] = np.asarray(margin, dtype=float)
    ok_arr = np.ones(n, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    return ModelArrays(score_arr, cost_arr, ok_arr, values)


def dataset(
    plain: Mapping[str, ModelArrays], refined: Mapping[str, ModelArrays] | None = None, task: str = "t"
) -> CalibrationData:
    n = len(next(iter(plain.values())).score)
    return CalibrationData(task, np.arange(n, dtype=np.int64), dict(plain), dict(refined or {}))

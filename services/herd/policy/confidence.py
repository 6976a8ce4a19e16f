"""Calibrated confidence: per model, a monotone map from an uncertainty measure to P(correct).

Fitted with scikit-learn's IsotonicRegression (increasing for a confidence such as the first-token
margin, decreasing for an uncertainty such as entropy or NLL; out_of_bounds="clip"), the approach of
UCCI (Kotte 2026), then kept only as its breakpoints (`X_thresholds_`, `y_thresholds_`) in a
`CalibrationMap`: plain JSON lists evaluated with numpy.interp, so serving never loads sklearn
objects or pickle. Reliability is the expected calibration error (ECE) of Guo et al. (2017).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
from sklearn.isotonic import IsotonicRegression

from herd.policy.data import CalibrationData, CalibrationDataError, ModelArrays
from herd.policy.spec import CalibrationMap, RawMeasure, is_confidence


class NothingToCalibrateError(CalibrationDataError):
    """No answer has a usable value of the measure (every one NaN), so P(correct) cannot be fitted."""


def correct(arrays: ModelArrays, cut: float = 0.5) -> np.ndarray:
    """(n,) bool: the attempt is ok and its score >= `cut` (what P(correct) predicts)."""
    with np.errstate(invalid="ignore"):
        return arrays.ok & (arrays.score >= cut)


def fit_map(values: np.ndarray, is_correct: np.ndarray, measure: str, refine: bool = False) -> CalibrationMap:
    """Isotonic map from `values` (n,) of raw `measure` to P(correct), fitted on the pairs whose value
    is not NaN. Increasing for a confidence measure, decreasing for an uncertainty measure.

    Raises NothingToCalibrateError when no value is usable.
    """
    values = np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    if not keep.any():
        raise NothingToCalibrateError(f"no {measure} values to calibrate on")
    iso = IsotonicRegression(increasing=is_confidence(measure), out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(values[keep], np.asarray(is_correct, dtype=float)[keep])
    return CalibrationMap(
        measure=cast(RawMeasure, measure),
        refine=refine,
        x=[float(v) for v in iso.X_thresholds_],
        y=[float(v) for v in iso.y_thresholds_],
    )


def fit_maps(
    data: CalibrationData,
    measure: str = "first_token_margin",
    train: np.ndarray | None = None,
    cut: float = 0.5,
    models: Iterable[str] | None = None,
) -> dict[tuple[str, bool], CalibrationMap]:
    """One map per (model, refine) variant present in `data`, fitted on rows `train` (default all).

    Correct means score >= `cut` on an ok attempt. Raises CalibrationDataError when a model lacks the
    measure, ValueError when a variant has no usable value on the train rows.
    """
    rows = np.arange(data.n) if train is None else np.asarray(train)
    wanted = set(data.models if models is None else models)
    maps = {}
    for refine, variants in ((False, data.plain), (True, data.refined)):
        for model, arrays in variants.items():
            if model not in wanted:
                continue
            if measure not in arrays.measures:
                raise CalibrationDataError(f"no {measure!r} values for model {model!r} to calibrate")
            part = arrays.take(rows)
            maps[(model, refine)] = fit_map(part.measures[measure], correct(part, cut), measure, refine)
    return maps


def add_p_correct(data: CalibrationData, maps: Mapping[tuple[str, bool], CalibrationMap]) -> CalibrationData:
    """A copy of `data` with a `p_correct` measure per mapped variant (NaN where the raw value is)."""
    values = {
        (model, refine): cal.apply(data.arrays(model, refine).measures[cal.measure])
        for (model, refine), cal in maps.items()
    }
    return data.with_measure("p_correct", values)


def raw_confidence(values: np.ndarray, measure: str) -> np.ndarray:
    """The uncalibrated measure squashed to [0, 1] as a naive P(correct), for the 'before' ECE.

    The first-token margin p(top1) - p(top2) is already in [0, 1] (clipped). An uncertainty u >= 0
    (entropy, NLL in nats) becomes exp(-u): for mean_nll that is the geometric-mean token
    probability; for entropies it is a monotone convention, not a probability.
    """
    values = np.asarray(values, dtype=float)
    return np.asarray(
        np.clip(values, 0.0, 1.0) if is_confidence(measure) else np.exp(-np.maximum(values, 0.0))
    )


def expected_calibration_error(p: np.ndarray, is_correct: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum_b |B_b|/n · |acc(B_b) - conf(B_b)| over `n_bins` equal-width bins of predicted
    probability ((m-1)/M, m/M], the first bin also holding 0 (Guo, Pleiss, Sun & Weinberger 2017,
    "On Calibration of Modern Neural Networks", eq. 3). NaN predictions are left out; NaN if none left.
    """
    p = np.asarray(p, dtype=float)
    keep = ~np.isnan(p)
    p, hit = p[keep], np.asarray(is_correct, dtype=float)[keep]
    if p.size == 0:
        return float("nan")
    bins = np.clip(np.ceil(p * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, weights=hit, minlength=n_bins) - np.bincount(bins, weights=p, minlength=n_bins)
    return float(np.abs(gap).sum() / count.sum())


@dataclass(frozen=True)
class Reliability:
    """ECE of one model variant on held-out rows, before (raw measure) and after calibration."""

    model: str
    refine: bool
    measure: str
    n: int
    ece_before: float
    ece_after: float


def reliability(
    data: CalibrationData,
    maps: Mapping[tuple[str, bool], CalibrationMap],
    held_out: np.ndarray,
    cut: float = 0.5,
) -> list[Reliability]:
    """Per mapped variant, ECE on rows `held_out` of the raw measure (see `raw_confidence`) and of
    the calibrated P(correct). Fit on train, report on held-out: otherwise isotonic regression's
    in-sample ECE is optimistic."""
    out = []
    for (model, refine), cal in maps.items():
        part = data.arrays(model, refine).take(np.asarray(held_out))
        raw = part.measures[cal.measure]
        hit = correct(part, cut)
        out.append(
            Reliability(
                model,
                refine,
                cal.measure,
                int((~np.isnan(raw)).sum()),
                expected_calibration_error(raw_confidence(raw, cal.measure), hit),
                expected_calibration_error(cal.apply(raw), hit),
            )
        )
    return out

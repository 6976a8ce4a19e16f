"""Calibration data as numpy arrays: every prompt of a calibration job answered by every model.

One row per prompt, the same order in every array. Per model there is the plain variant (refinement
off: the answer-stage attempt) and optionally the refined variant (refinement on: the attempt that
decides, i.e. the last refine, or the latest answer when a critique found nothing to fix).

Per variant:
- `score`: the scorer's score in [0, 1] of the deciding attempt; NaN allowed only where `ok` is False;
- `cost_usd`: attributed cost of the model's attempts on the prompt (answer only when plain;
  answer + critiques + refines when refined), errors included since the live pipeline charges them;
- `ok`: False when any of those attempts is not an answer (an error, a timeout, an empty or cut-off
  answer). Live, an error fails the prompt: it ends there with no answer and is never escalated. In
  a calibration sample it says nothing about the model's quality, so choosing and evaluating leave
  such prompts out (`answered`): herd.policy.calibration drops them when loading, and
  herd.policy.calibrate and herd.policy.router drop any left in data built otherwise;
- `measures`: name -> values of the deciding attempt (NaN = missing: never escalates).

Building these arrays from the ledger is the caller's job; this module only checks and slices them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from herd.errors import UserError
from herd.policy.spec import is_confidence


class CalibrationDataError(UserError, ValueError):
    """Calibration arrays are missing, empty or inconsistent; the message names model and array."""


@dataclass(frozen=True)
class ModelArrays:
    """One model (one refinement variant) over all n prompts; every array has shape (n,)."""

    score: np.ndarray
    cost_usd: np.ndarray
    ok: np.ndarray
    measures: Mapping[str, np.ndarray] = field(default_factory=dict)

    def take(self, index: np.ndarray) -> ModelArrays:
        """The rows `index` (int array or boolean mask) of every array."""
        return ModelArrays(
            self.score[index],
            self.cost_usd[index],
            self.ok[index],
            {name: values[index] for name, values in self.measures.items()},
        )

    def effective_score(self, cut: float | None = None) -> np.ndarray:
        """(n,) float: the score a prompt ends with if it stops here; 0 on error; 0/1 when `cut` is set."""
        score = self.score if cut is None else (self.score >= cut).astype(float)
        return np.where(self.ok, score, 0.0)

    def key(self, measure: str) -> np.ndarray:
        """(n,) float: the measure oriented so that `key < t` means escalate (a confidence as is, an
        uncertainty negated); +inf where the value is missing or the attempt failed (never escalates)."""
        values = self.measures[measure]
        key = values.astype(float) if is_confidence(measure) else -values.astype(float)
        key[~self.ok | np.isnan(key)] = np.inf
        return key


@dataclass(frozen=True)
class CalibrationData:
    """Calibration job as arrays. `prompt_ids` (n,) int; `plain`/`refined`: model name -> ModelArrays."""

    task: str
    prompt_ids: np.ndarray
    plain: Mapping[str, ModelArrays]
    refined: Mapping[str, ModelArrays] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        if n == 0:
            raise CalibrationDataError("calibration data has no prompts")
        if not self.plain:
            raise CalibrationDataError("calibration data has no models")
        for variant, models in (("plain", self.plain), ("refined", self.refined)):
            for name, arrays in models.items():
                _check(f"{variant}[{name!r}]", arrays, n)

    @property
    def n(self) -> int:
        return len(self.prompt_ids)

    @property
    def models(self) -> list[str]:
        return list(self.plain)

    def arrays(self, model: str, refine: bool = False) -> ModelArrays:
        """The model's arrays with refinement on or off. Raises CalibrationDataError if absent."""
        source = self.refined if refine else self.plain
        if model not in source:
            kind = "refined (refinement on)" if refine else "plain (refinement off)"
            raise CalibrationDataError(f"no {kind} calibration arrays for model {model!r}")
        return source[model]

    def take(self, index: np.ndarray) -> CalibrationData:
        """The rows `index` (int array or boolean mask), in that order."""
        index = np.asarray(index)
        return CalibrationData(
            self.task,
            self.prompt_ids[index],
            {m: a.take(index) for m, a in self.plain.items()},
            {m: a.take(index) for m, a in self.refined.items()},
        )

    def with_measure(self, name: str, values: Mapping[tuple[str, bool], np.ndarray]) -> CalibrationData:
        """A copy with measure `name` added; `values[(model, refine)]` is its (n,) array."""

        def add(models: Mapping[str, ModelArrays], refine: bool) -> dict[str, ModelArrays]:
            out = {}
            for m, a in models.items():
                extra = {name: values[(m, refine)]} if (m, refine) in values else {}
                out[m] = ModelArrays(a.score, a.cost_usd, a.ok, {**a.measures, **extra})
            return out

        return CalibrationData(self.task, self.prompt_ids, add(self.plain, False), add(self.refined, True))

    def answered(self, models: Sequence[str] | None = None) -> np.ndarray:
        """(n,) bool: every variant (plain and refined) of every model in `models` (default: all)
        answered the prompt (`ok`). A row that is False holds a non-answer (an error, a timeout, an
        empty or cut-off answer): no evidence of the model's quality either way."""
        wanted = self.models if models is None else list(models)
        ok = np.ones(self.n, dtype=bool)
        for variants in (self.plain, self.refined):
            for model in wanted:
                if model in variants:
                    ok &= variants[model].ok
        return ok

    def non_answers(self, models: Sequence[str] | None = None) -> dict[str, int]:
        """Per model of `models` (default: all): prompts on which some variant gave no answer."""
        wanted = self.models if models is None else list(models)
        return {m: int((~self.answered([m])).sum()) for m in wanted}

    def check_route(self, route: Sequence[str]) -> None:
        """Raise CalibrationDataError unless every model of `route` has plain arrays, each once."""
        if not route:
            raise CalibrationDataError("the route has no models")
        if len(set(route)) != len(route):
            raise CalibrationDataError(f"the route {list(route)} names a model twice")
        missing = [m for m in route if m not in self.plain]
        if missing:
            raise CalibrationDataError(f"no calibration arrays for model(s) {missing} of the route")


def _check(where: str, a: ModelArrays, n: int) -> None:
    arrays = {"score": a.score, "cost_usd": a.cost_usd, "ok": a.ok, **dict(a.measures)}
    for name, values in arrays.items():
        if not isinstance(values, np.ndarray) or values.shape != (n,):
            shape = getattr(values, "shape", type(values).__name__)
            raise CalibrationDataError(f"{where}.{name}: expected an array of shape ({n},), got {shape}")
    if a.ok.dtype != bool:
        raise CalibrationDataError(f"{where}.ok: expected a boolean array, got {a.ok.dtype}")
    scored = a.score[a.ok]
    if np.isnan(scored).any():
        raise CalibrationDataError(f"{where}.score: {int(np.isnan(scored).sum())} ok attempts are unscored")
    if ((scored < 0) | (scored > 1)).any():
        raise CalibrationDataError(f"{where}.score: scores must lie in [0, 1]")
    if not np.isfinite(a.cost_usd).all() or (a.cost_usd < 0).any():
        raise CalibrationDataError(f"{where}.cost_usd: costs must be finite and >= 0")

"""A cascade policy as data: entry model, then per tier the measure, threshold and refinement.

The text form is YAML a person can read, diff and roll back: fixed key order (task, entry, tiers,
calibration; within a tier model, measure, threshold, refine), one tier per list item, numbers as
Python writes them. `Policy.from_text(p.to_text()) == p` for every valid policy.

    task: sentiment
    entry: smollm2
    tiers:
      - model: smollm2
        measure: first_token_margin
        threshold: 0.42
        refine: false
      - model: gemma3

Semantics (the live pipeline's, see herd/herdfile/model.py `TaskTier.escalates`): a tier escalates when its
measure is below the threshold for a confidence measure (`first_token_margin`, `p_correct`) and
above it for an uncertainty measure (`mean_entropy`, `max_entropy`, `mean_nll`); a missing value
never escalates; the last tier never escalates. `p_correct` is a calibrated probability: the tier's
model needs a calibration map (isotonic breakpoints, see herd.policy.confidence) from one raw measure.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from herd.errors import UserError

Measure = Literal["first_token_margin", "mean_entropy", "max_entropy", "mean_nll", "p_correct"]
RawMeasure = Literal["first_token_margin", "mean_entropy", "max_entropy", "mean_nll"]
MEASURES: tuple[str, ...] = ("first_token_margin", "mean_entropy", "max_entropy", "mean_nll", "p_correct")
RAW_MEASURES: tuple[str, ...] = MEASURES[:4]
# A confidence is escalated when LOW; every other measure is an uncertainty, escalated when HIGH.
CONFIDENCE_MEASURES: frozenset[str] = frozenset({"first_token_margin", "p_correct"})


class PolicyError(UserError, ValueError):
    """A policy text or object is invalid; the message names the field, e.g. `tiers[1].threshold`."""


def is_confidence(measure: str) -> bool:
    """True when a LOW value of `measure` means unsure (escalate when value < threshold)."""
    return measure in CONFIDENCE_MEASURES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationMap(_Strict):
    """A monotone map from one raw measure of one model to P(correct), as isotonic breakpoints.

    `x` ascending, `y` in [0, 1], same length >= 1. Evaluated by linear interpolation between the
    breakpoints and clipped outside them (sklearn IsotonicRegression's `predict` with
    out_of_bounds="clip", reproduced with numpy.interp so serving needs neither sklearn nor pickle).
    `refine` says whether it was fitted on the refined answer (refinement on) or the plain one.
    """

    measure: RawMeasure
    refine: bool = False
    x: list[float] = Field(min_length=1)
    y: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _breakpoints(self) -> CalibrationMap:
        if len(self.x) != len(self.y):
            raise ValueError(f"x and y must have the same length (got {len(self.x)} and {len(self.y)})")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("x must be ascending")
        if any(not 0.0 <= v <= 1.0 for v in self.y):
            raise ValueError("y must lie in [0, 1]")
        return self

    def apply(self, values: np.ndarray) -> np.ndarray:
        """P(correct) for raw measure `values` (any shape, float); NaN stays NaN (a missing value)."""
        values = np.asarray(values, dtype=float)
        out = np.interp(values, np.asarray(self.x), np.asarray(self.y))
        out[np.isnan(values)] = np.nan
        return np.asarray(out)


class Tier(_Strict):
    """One model's step. `threshold=None` means this tier never escalates (it must be the last)."""

    model: str = Field(min_length=1)
    measure: Measure | None = None
    threshold: float | None = None
    refine: bool = False

    @model_validator(mode="after")
    def _measure_with_threshold(self) -> Tier:
        if self.threshold is not None and self.measure is None:
            raise ValueError("a tier with a threshold needs a measure")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ValueError("threshold must be a finite number (leave it out to never escalate)")
        return self

    def escalates(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask, same shape as `values` (this tier's measure): True where the answer escalates.

        NaN (a missing value) never escalates, as in the live pipeline; `threshold=None` escalates nothing.
        """
        values = np.asarray(values, dtype=float)
        if self.threshold is None or self.measure is None:
            return np.zeros(values.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return values < self.threshold if is_confidence(self.measure) else values > self.threshold


class Policy(_Strict):
    """Entry model plus the tiers of the route from it; a single-model policy has one tier."""

    task: str = Field(min_length=1)
    entry: str = Field(min_length=1)
    tiers: list[Tier] = Field(min_length=1)
    calibration: dict[str, CalibrationMap] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _chain(self) -> Policy:
        if self.tiers[0].model != self.entry:
            raise ValueError(f"tiers[0].model: the first tier must be the entry model {self.entry!r}")
        seen: set[str] = set()
        for i, tier in enumerate(self.tiers):
            if tier.model in seen:
                raise ValueError(f"tiers[{i}].model: {tier.model!r} appears twice")
            seen.add(tier.model)
            last = i == len(self.tiers) - 1
            if last and tier.threshold is not None:
                raise ValueError(f"tiers[{i}].threshold: the last tier never escalates; leave it out")
            if not last and tier.threshold is None:
                raise ValueError(f"tiers[{i}].threshold: only the last tier may omit its threshold")
            if tier.measure == "p_correct" and not last:
                cal = self.calibration.get(tier.model)
                if cal is None:
                    raise ValueError(f"tiers[{i}].measure: p_correct needs calibration.{tier.model}")
                if cal.refine != tier.refine:
                    raise ValueError(f"calibration.{tier.model}.refine: must match tiers[{i}].refine")
        return self

    @classmethod
    def single(cls, task: str, model: str, refine: bool = False) -> Policy:
        """The policy that runs `model` alone (never escalates)."""
        return cls(task=task, entry=model, tiers=[Tier(model=model, refine=refine)])

    @property
    def models(self) -> list[str]:
        return [t.model for t in self.tiers]

    def summary(self) -> str:
        """One line, e.g. `smollm2 (first_token_margin < 0.42) -> gemma3+refine` or `gemma3 alone`."""
        if len(self.tiers) == 1:
            return f"{_label(self.tiers[0])} alone"
        parts = []
        for tier in self.tiers:
            rule = ""
            if tier.threshold is not None:
                sign = "<" if is_confidence(str(tier.measure)) else ">"
                rule = f" ({tier.measure} {sign} {tier.threshold:g})"
            parts.append(_label(tier) + rule)
        return " -> ".join(parts)

    def to_text(self) -> str:
        """Stable YAML text; see the module docstring for the layout."""
        doc: dict[str, Any] = {"task": self.task, "entry": self.entry, "tiers": []}
        for tier in self.tiers:
            item: dict[str, Any] = {"model": tier.model}
            if tier.threshold is not None:
                item.update(measure=tier.measure, threshold=float(tier.threshold), refine=tier.refine)
            elif tier.refine:
                item["refine"] = True
            doc["tiers"].append(item)
        if self.calibration:
            doc["calibration"] = {
                name: {"measure": m.measure, "refine": m.refine, "x": _Flow(m.x), "y": _Flow(m.y)}
                for name, m in sorted(self.calibration.items())
            }
        return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)

    @classmethod
    def from_text(cls, text: str) -> Policy:
        """Parse `to_text` output (or hand-written YAML of the same shape).

        Raises PolicyError naming the offending field, e.g. `tiers[0].threshold: ...`.
        """
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"policy text is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise PolicyError("policy text must be a mapping with task, entry and tiers")
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise PolicyError(_describe(exc)) from None


def _label(tier: Tier) -> str:
    return tier.model + ("+refine" if tier.refine else "")


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)


class _Flow(list[float]):
    """A list written on one line (breakpoint lists stay compact in the text form)."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # indent list items under their key


_Dumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)

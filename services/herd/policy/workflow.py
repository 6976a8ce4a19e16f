"""`herd calibrate` as one call: read a calibration job (or an audit sample), choose the policy that
meets a target and record it as a new version with its estimates (docs/policy.md).

The command parses its options and prints the `Calibrated` this returns; nothing here prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg

from herd.herdfile.model import HerdConfig
from herd.input_errors import InputError
from herd.policy import audit_calibration, calibration, versions
from herd.policy.calibrate import Choice, Match, MinQuality, Target, choose, target_text
from herd.policy.calibration import Loaded
from herd.policy.replay import Interval
from herd.policy.spec import RAW_MEASURES


@dataclass(frozen=True)
class CalibrateOptions:
    """What `herd calibrate` was asked besides its target (docs/policy.md): `method` "guarantee" or
    "point", `confidence` in (0, 1), `scorer` (None: the job's first by name), `scorer_cut` (a score
    >= it counts as correct), the split's `seed` and `train_fraction` (None: the method's default),
    `p_correct` adds calibrated P(correct) to the measures, `from_audit` reads the audit sample."""

    method: str = "guarantee"
    confidence: float = 0.9
    scorer: str | None = None
    scorer_cut: float | None = None
    seed: int = 0
    train_fraction: float | None = None
    p_correct: bool = False
    activate: bool = True
    activate_anyway: bool = False
    allow_non_answers: bool = False
    from_audit: bool = False


@dataclass(frozen=True)
class Calibrated:
    """The `choice`, its policy as `text`, the data it came from (`loaded`) and the version recorded
    (None: not recorded, its guarantee failed or it missed the target, and not `activate_anyway`)."""

    choice: Choice
    text: str
    loaded: Loaded
    version: int | None


def calibrate_version(
    conn: psycopg.Connection, herd: HerdConfig, job: str, task: str, target: Target, options: CalibrateOptions
) -> Calibrated:
    """Choose and record, in `conn`'s transaction (the caller commits). Raises InputError for a
    confidence outside (0, 1), a scorer given with `from_audit`, or too many non-answers unless allowed
    (each before anything is written); UnknownJobError; what `choose` raises (UnreachableTargetError,
    GuaranteeError, NothingToCalibrateError)."""
    o = options
    if not 0.0 < o.confidence < 1.0:
        raise InputError(f"--confidence must lie strictly between 0 and 1 (got {o.confidence})")
    if o.from_audit and (o.scorer is not None or o.scorer_cut is not None):
        raise InputError("--from-audit scores by accuracy, or agreement with the reference: no --scorer")
    measures = (*RAW_MEASURES, "p_correct") if o.p_correct else RAW_MEASURES
    if o.from_audit:
        loaded = audit_calibration.load(conn, herd, job, task)
    else:
        loaded = calibration.load(conn, herd, job, task, o.scorer)
    loaded.check_non_answers(o.allow_non_answers, job)
    choice = choose(
        loaded.data,
        loaded.route,
        target,
        measures=measures,
        scorer_cut=o.scorer_cut,
        train_fraction=o.train_fraction,
        seed=o.seed,
        method=o.method,
        confidence=o.confidence,
    )
    text = choice.policy.to_text()
    version = None
    if not choice.refused or o.activate_anyway:
        figures = estimates(choice, loaded.scorer, o.scorer_cut, job, loaded)
        version = versions.record(conn, task, text, loaded.job_id, figures, o.activate)
    return Calibrated(choice, text, loaded, version)


def estimates(
    choice: Choice, scorer: str, scorer_cut: float | None, job: str, loaded: Loaded | None = None
) -> dict[str, Any]:
    """The JSON stored with a policy version: target, method, guarantee (confidence, bound), the
    figures on the search rows (`train`) and the other rows (`held_out`: the test part for the
    guarantee), ECE, and the prompts left out for a non-answer."""

    def iv(i: Interval) -> dict[str, float | None]:
        return {
            k: (None if math.isnan(v) else v)
            for k, v in (("value", i.value), ("low", i.low), ("high", i.high))
        }

    held = choice.held_out_intervals
    thin = choice.thin
    return {
        "calibration_job": job,
        "scorer": scorer,
        "scorer_cut": scorer_cut,
        "target": target_text(choice.target),
        "promised_quality": promised_quality(choice),
        "method": choice.method,
        "confidence": choice.confidence,
        "guaranteed": choice.guaranteed,
        "bound": choice.bound,
        "test": choice.test or None,
        "candidates_tested": choice.tested,
        "too_thin": None
        if thin is None
        else {
            "policy": thin.policy.summary(),
            "cost_per_1k_usd": thin.cost_per_1k,
            "quality": thin.quality,
            "prompts_needed": thin.prompts,
            "power": thin.power,
        },
        "train": {
            "prompts": len(choice.train_rows),
            "quality": choice.train_quality,
            "cost_per_1k_usd": choice.train_cost_per_1k,
        },
        "held_out": {
            "prompts": len(choice.held_out_rows),
            "quality": iv(held.quality),
            "cost_per_1k_usd": iv(held.cost_per_1k),
            "escalation_rate": [iv(r) for r in held.escalation_rate],
        },
        "meets_target_on_held_out": choice.meets_target_on_held_out,
        "message": choice.message,
        "ece": [
            {
                "model": r.model,
                "refine": r.refine,
                "measure": r.measure,
                "before": r.ece_before,
                "after": r.ece_after,
            }
            for r in choice.reliability
        ],
        "left_out_no_answer": {
            "prompts": loaded.unanswered if loaded is not None else sum(choice.left_out.values()),
            "per_model": loaded.non_answers if loaded is not None else choice.left_out,
        },
    }


def promised_quality(choice: Choice) -> float | None:
    """The quality the target promises, as one number the audit compares with (herd/reporting/audit.py):
    a quality target's floor; for a match target, `at` times the model alone's quality on the prompts
    the choice was checked on (the held-out or test part); None for a cost target (no quality promised)."""
    target = choice.target
    if isinstance(target, MinQuality):
        return float(target.quality)
    if isinstance(target, Match) and choice.reference_quality is not None:
        return float(target.at * choice.reference_quality[1])
    return None

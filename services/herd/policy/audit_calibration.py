"""An audited live job's sample as calibration data (`herd calibrate JOB --from-audit`): no model call.

What the audit holds, per sampled document: the live entry model's `answer` attempt (every live
prompt starts there: its answer and its four measures), and the reference model's own answer (the
audit job, herd/quality/audit.py). That is a complete calibration sample for the two-model route
[entry, reference]: choosing there re-chooses the entry's measure and threshold (or the entry alone,
or the reference alone) for the current documents. It is not one for anything else: a middle model
answered only the prompts escalated to it, and refinement ran only where the live policy asked for
it, so neither can be re-chosen from the audit; that needs a calibration job (`herd submit
--calibration`).

Scores: with a reference on every paired document, each model's accuracy on it
(herd.quality.scorers.correct); otherwise agreement with the reference model's answer
(herd.quality.scorers.agree), under which the reference model scores 1 on every prompt, so a target
reads as "agrees with the reference at least this often" (use `--match REFERENCE --at 0.95`).
Documents whose entry attempt or audit answer is missing (unfinished, a chunked long document) are
left out; a non-answer (error, cut off) on either side is left out and counted, never a wrong answer,
as in herd.policy.calibration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from herd.herdfile.model import HerdConfig, TaskConfig
from herd.input_errors import InputError
from herd.ledger.jobs import UnknownJobError
from herd.ledger.outcomes import non_answer
from herd.policy.calibration import Loaded, model_arrays
from herd.policy.data import CalibrationData
from herd.policy.spec import RAW_MEASURES
from herd.quality.audit import job_audit
from herd.quality.scorers import agree, correct

ACCURACY, AGREEMENT = "audit-accuracy", "audit-agreement"

_ANSWERS = f"""
    SELECT p.doc_key, p.reference, a.status, a.answer, {", ".join(f"a.{m}" for m in RAW_MEASURES)},
           a.error, a.finish_reason, c.cost_usd, p.id
    FROM prompts p
    JOIN attempts a ON a.prompt_id = p.id AND a.model = %s AND a.stage = 'answer' AND a.round = 0
    JOIN attempt_costs c ON c.attempt_id = a.id
    WHERE p.job_id = %s AND p.parent_id IS NULL AND p.state IN ('done', 'failed')"""


def load(conn: psycopg.Connection, herd: HerdConfig, job: str, task: str) -> Loaded:
    """CalibrationData over [the job's entry model, the audit's reference] from audited live job `job`.
    Raises UnknownJobError / InputError (one line) for an unknown job, another task, a job without an
    audit, an audit whose reference is the entry itself, or no paired document yet."""
    if task not in herd.tasks:
        raise InputError(f"unknown task {task!r}; the herd file defines: {', '.join(sorted(herd.tasks))}")
    row = conn.execute("SELECT id, task, entry_model FROM jobs WHERE name = %s", (job,)).fetchone()
    if row is None:
        raise UnknownJobError(f"no job named {job!r}")
    job_id, job_task, entry = int(row[0]), str(row[1]), str(row[2])
    if job_task != task:
        raise InputError(f"job {job!r} ran task {job_task!r}, not {task!r}")
    found = job_audit(conn, job_id)
    if found is None:
        raise InputError(
            f"job {job!r} has no audit: submit it with --audit RATE (or `audit:` in the herd file)"
        )
    audit_id, audit_name, audit = found
    if audit.reference == entry:
        raise InputError(f"job {job!r} is audited by its own entry model {entry}: there is nothing to choose")
    mine = {r[0]: r for r in conn.execute(_ANSWERS, (entry, job_id))}
    theirs = {r[0]: r for r in conn.execute(_ANSWERS, (audit.reference, audit_id))}
    keys = sorted(mine.keys() & theirs.keys())
    sampled = conn.execute("SELECT count(*) FROM prompts WHERE job_id = %s", (audit_id,)).fetchone()
    config = herd.tasks[task]
    with_reference = bool(keys) and all(mine[k][1] is not None for k in keys)
    rows: dict[str, list[tuple[float, float, bool, dict[str, float]]]] = {entry: [], audit.reference: []}
    ids: list[int] = []
    kinds: dict[str, dict[str, int]] = {}
    unanswered = 0
    for key in keys:
        a, b = mine[key], theirs[key]
        missing = {m: k for m, r in ((entry, a), (audit.reference, b)) if (k := _non_answer(r)) is not None}
        if missing:
            unanswered += 1
            for model, kind in missing.items():
                kinds.setdefault(model, {}).setdefault(kind, 0)
                kinds[model][kind] += 1
            continue
        ids.append(int(a[-1]))
        rows[entry].append(_row(a, _score(config, with_reference, a[3], b[3], a[1])))
        rows[audit.reference].append(_row(b, _score(config, with_reference, b[3], b[3], b[1])))
    left_out = (int(sampled[0]) if sampled else 0) - len(ids) - unanswered
    if not ids:
        raise InputError(
            f"job {job!r}: none of the {int(sampled[0]) if sampled else 0} audited prompts has both the "
            f"{entry} answer and the {audit.reference} answer yet (audit job {audit_name}): wait for the job"
        )
    data = CalibrationData(task, np.array(ids, dtype=np.int64), {m: model_arrays(v) for m, v in rows.items()})
    scorer = ACCURACY if with_reference else AGREEMENT
    return Loaded(data, job_id, [entry, audit.reference], scorer, [scorer], left_out, unanswered, kinds)


def _non_answer(row: tuple[Any, ...]) -> str | None:
    return non_answer(row[2] == "ok", row[8], row[9])


def _score(
    task: TaskConfig, with_reference: bool, answer: str, reference_answer: str, ref: str | None
) -> float:
    if with_reference:
        return 1.0 if correct(task, answer, ref) else 0.0
    return 1.0 if agree(task, answer, reference_answer) else 0.0


def _row(row: tuple[Any, ...], score: float) -> tuple[float, float, bool, dict[str, float]]:
    measures = {
        m: (float(v) if v is not None else np.nan) for m, v in zip(RAW_MEASURES, row[4:8], strict=True)
    }
    return score, float(row[10] or 0), True, measures

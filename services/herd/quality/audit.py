"""The audit of a live job: a seeded sample of its prompts, answered again by a reference model alone.

The sample is a second job of kind 'audit' (`jobs.audit_of` = the audited job, migration 0014) that
holds copies of the sampled prompts (same document ids, text, reference and fields). Its entry model
is the reference; the pipeline runs it like a direct job (one model, no cascade, no policy version),
so the reference's answer is independent of the cascade's, the audited job's own answers are
untouched, and the audit's attempts, and their cost, belong to the audit job (herd/jobs/quality.py
pairs the two jobs' final answers by document id).

Which prompts: `audited(job, key, rate)`, a hash of the job's name and the document id compared with
the rate, so submitting the same job again (or a worker re-sending a prompt) picks the same prompts,
and each prompt is in the sample with probability `rate`, independently of the others.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import psycopg

from herd.herdfile.model import HerdConfig
from herd.input_errors import InputError

# An audit job is named after the job it audits; a name no user job is likely to take.
SUFFIX = "~audit"
_SCALE = float(2**64)


@dataclass(frozen=True)
class Audit:
    """A job's audit: `rate` in (0, 1], the share of prompts sampled; `reference`: the model that
    answers them alone."""

    rate: float
    reference: str


def audit_job_name(job: str) -> str:
    return job + SUFFIX


def audited(job: str, key: str, rate: float) -> bool:
    """Whether document `key` of job `job` is in the audit sample at `rate`: the first 8 bytes of
    SHA-256(job, key) read as a number u in [0, 1), and the prompt is sampled when u < rate. SHA-256's
    output is uniform for practical purposes, so P(sampled) = rate for each prompt, independently."""
    digest = hashlib.sha256(f"{job}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE < rate


def check_rate(rate: float, where: str = "--audit") -> float:
    """`rate` if it lies in [0, 1] (0: no audit); InputError naming `where` otherwise."""
    if not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        raise InputError(
            f"{where} must be a share of the job's prompts between 0 and 1, e.g. 0.02 (got {rate}); "
            "0 turns the audit off"
        )
    return rate


@dataclass(frozen=True)
class Names:
    """How the user gave the audit, for errors: the rate's and the reference's option or field."""

    rate: str = "--audit"
    reference: str = "--audit-reference"


OPTIONS = Names()  # `herd submit`'s


def resolve(
    herd: HerdConfig,
    task: str,
    rate: float | None,
    reference: str | None,
    kind: str = "live",
    names: Names = OPTIONS,
) -> Audit | None:
    """The audit a new job of `task` carries: `rate` and `reference` as given (e.g. `herd submit
    --audit 0.02 --audit-reference large`, or an API batch's metadata), else the herd file's `audit:`;
    the reference defaults to the last model of the task's route. None: no audit (no rate anywhere,
    or a rate of 0). Raises InputError naming `names` for a bad rate, an unknown reference, or an
    audit asked of a job that is not live (a calibration job, a model asked alone)."""
    if rate is not None:
        check_rate(rate, names.rate)
    if reference is not None and reference not in herd.models:
        raise InputError(f"{names.reference}: the model {reference!r} is not in the herd file")
    default = herd.audit
    if task not in herd.tasks:
        return None  # submitting refuses the unknown task, with the tasks the herd file has
    if kind != "live":
        if rate or reference is not None:
            raise InputError(f"{names.rate}: only a live job can be audited (this is a {kind} job)")
        return None
    chosen = rate if rate is not None else (default.rate if default is not None else None)
    if not chosen:
        if reference is not None:
            raise InputError(
                f"{names.reference} needs an audit rate: {names.rate}, or `audit:` in the herd file"
            )
        return None
    model = reference or (default.reference if default is not None else None) or herd.route(task)[-1].model
    return Audit(rate=chosen, reference=model)


def attach(conn: psycopg.Connection, job: str, job_id: int, task: str, audit: Audit) -> int:
    """Create (or find) the audit job of `job` and copy into it the prompts of the temporary
    `staging` table flagged `audit` (herd/jobs/submit.py), in the caller's transaction. Returns the
    number of prompts added. Raises InputError when the job is already audited otherwise (another
    rate or reference: the sample would no longer be one sample)."""
    name = audit_job_name(job)
    conn.execute(
        """INSERT INTO jobs (name, task, entry_model, kind, audit_of, audit_rate)
           VALUES (%s, %s, %s, 'audit', %s, %s) ON CONFLICT DO NOTHING""",
        (name, task, audit.reference, job_id, audit.rate),
    )
    row = conn.execute(
        "SELECT id, entry_model, audit_rate, audit_of FROM jobs WHERE name = %s", (name,)
    ).fetchone()
    if row is None or row[3] != job_id:
        raise InputError(f"cannot audit job {job!r}: the name {name!r} is taken by another job")
    if row[1] != audit.reference or not math.isclose(float(row[2]), audit.rate):
        raise InputError(
            f"job {job!r} is already audited at rate {float(row[2]):g} by {row[1]}; submit it again with "
            f"--audit {float(row[2]):g} --audit-reference {row[1]}, or use another --job"
        )
    return conn.execute(
        """INSERT INTO prompts (job_id, doc_key, text, reference, fields, content_hash, model)
           SELECT %s, doc_key, text, reference, fields, content_hash, %s FROM staging WHERE audit
           ON CONFLICT (job_id, doc_key) DO NOTHING""",
        (int(row[0]), audit.reference),
    ).rowcount


def job_audit(conn: psycopg.Connection, job_id: int) -> tuple[int, str, Audit] | None:
    """The audit job of job `job_id`: (its id, its name, the audit), or None when it is not audited."""
    row = conn.execute(
        "SELECT id, name, audit_rate, entry_model FROM jobs WHERE audit_of = %s", (job_id,)
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), str(row[1]), Audit(rate=float(row[2]), reference=str(row[3]))

"""`herd submit`: stream a document set into Postgres in one transaction, then fill the dispatch window.

Records are COPYed into a temporary table as they are read (flat memory for any size), checked there
(duplicate ids, changed content), and merged with ON CONFLICT DO NOTHING, so submitting the same job
again adds nothing. Any bad record aborts the whole submit: nothing half-written. Messages are sent
only after the commit, and only as many as the window allows; workers let the rest in as they finish.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import psycopg

from herd.cascade.prompts import required_fields
from herd.herdfile.model import HerdConfig
from herd.input_errors import InputError
from herd.jobs import routing
from herd.jobs.documents import Record
from herd.jobs.skipped import Skipped
from herd.jobs.skipped import store as store_skipped
from herd.ledger import steps as ledger
from herd.policy.active import load_active, stale_policy
from herd.quality.audit import Audit, attach, audited
from herd.vocabulary import Dispatch


class DuplicateIdsError(InputError):
    """Ids that appear more than once in one submit: `duplicates` is (id, the sources it is at), for at
    most three ids."""

    def __init__(self, duplicates: list[tuple[str, list[str]]]) -> None:
        self.duplicates = duplicates
        detail = "; ".join(f"id {key!r} at {', '.join(sources[:3])}" for key, sources in duplicates)
        super().__init__(f"duplicate document ids: {detail}")


@dataclass(frozen=True)
class SubmitResult:
    job: str
    job_id: int
    read: int
    added: int
    dispatched: list[Dispatch]
    audited: int = 0  # prompts added to the job's audit sample (herd/quality/audit.py)
    audit: Audit | None = None  # the job's audit, None when it has none


def content_hash(record: Record) -> str:
    payload = json.dumps([record.text, record.reference, record.fields], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def submit(
    conn: psycopg.Connection,
    herd: HerdConfig,
    *,
    job: str,
    task: str,
    records: Iterable[Record],
    window: int,
    progress: Callable[[int], None] = lambda n: None,
    kind: str = "live",
    budget_usd: Decimal | None = None,
    entry: str | None = None,
    skipped: Sequence[Skipped] = (),
    inputs: Sequence[str] = (),
    audit: Audit | None = None,
) -> SubmitResult:
    """Store the records of `job` and claim the first dispatches. The caller publishes them.

    `kind`: 'live' or 'calibration' (every model of the route answers every prompt, herd/cascade/
    pipeline.py); `budget_usd`: cap on the job's attributed cost (herd/policy/job_budget.py); `entry`: the
    first model (default: the task's active policy version's entry for a live job, else the herd file's
    route entry; a calibration job always starts at the route's first model). A live job without
    `entry` whose task has an active router (herd/jobs/routing.py) enters each prompt at the model the
    router picks and records `prompts.router_version` and `router_p_good`. `skipped`: files that
    could not be read (`--skip-unreadable`), stored with the job once `records` is consumed (a list
    the reader fills as it goes, herd/jobs/skipped.py). `inputs`: the files read, as the user named
    them, for the error when none holds a record. `audit`: a seeded sample of the records is also
    stored in the job's audit job, for its reference model alone (herd/quality/audit.py; see
    `audit.resolve`). Raises InputError (one line, nothing written)."""
    if task not in herd.tasks:
        raise InputError(f"unknown task {task!r}; the herd file defines: {', '.join(sorted(herd.tasks))}")
    # A live job without a forced entry is routed per prompt when the task has an active router.
    routed = routing.active_router(conn, herd, task) if entry is None and kind == "live" else None
    if entry is None and kind == "live":
        active = load_active(conn, task)
        stale = stale_policy(herd, task, active[0], active[1].models) if active is not None else None
        if stale is not None:  # its escalations would wait on a queue no worker reads
            raise InputError(str(stale))
        entry = active[1].entry if active is not None else None
    if entry is not None and entry not in herd.models:
        raise InputError(f"the entry model {entry!r} is not in the herd file")
    entry = entry or herd.entry_for(task)
    needed = required_fields(herd.tasks[task], {step.prompt_mode for step in herd.route(task)})
    job_id = _job(conn, job, task, entry, kind, budget_usd)
    conn.execute(
        """CREATE TEMP TABLE staging (doc_key text, text text, reference text, fields jsonb,
                                      content_hash text, source text, audit boolean, model text,
                                      router_p_good jsonb)
           ON COMMIT DROP"""
    )
    read = 0
    source = ""
    columns = "doc_key, text, reference, fields, content_hash, source, audit"
    try:
        with conn.cursor().copy(
            f"COPY staging ({columns}{', model, router_p_good' if routed else ''}) FROM STDIN"
        ) as copy:
            writer = routing.RoutingWriter(copy, routed[1]) if routed else None
            for record in records:
                source = record.source
                missing = needed - record.fields.keys()
                if missing:
                    # Either the record lacks a field, or the herd file's template misspells one:
                    # name both sides so the user can tell which.
                    has = ", ".join(sorted({"text", *record.fields})) or "text"
                    raise InputError(
                        f"{record.source}: task {task!r} needs field(s) {sorted(missing)}: its template "
                        f"in the herd file uses {', '.join('{' + m + '}' for m in sorted(missing))}, and "
                        f"this record has: {has}"
                    )
                row = (
                    record.key,
                    record.text,
                    record.reference,
                    json.dumps(record.fields),
                    content_hash(record),
                    record.source,
                    audit is not None and audited(job, record.key, audit.rate),
                )
                if writer is None:
                    copy.write_row(row)
                else:
                    writer.write(row, record.text)
                read += 1
                if read % 1000 == 0:
                    progress(1000)
            if writer is not None:
                writer.close()
    except (psycopg.DataError, UnicodeError) as exc:
        # services/documents.py refuses what Postgres cannot store; should a value slip through, the
        # user still gets one line naming the place (COPY buffers rows, so it is approximate).
        raise InputError(f"{source or 'the document set'}: cannot be stored: {exc}") from None
    progress(read % 1000)
    if read == 0:
        unread = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
        named = (
            f": no records in {', '.join(inputs[:3])}{' ...' if len(inputs) > 3 else ''}" if inputs else ""
        )
        raise InputError(f"the document set is empty{named}{unread}")
    store_skipped(conn, job_id, skipped)
    _check_staging(conn, job_id)
    added = conn.execute(
        """INSERT INTO prompts (job_id, doc_key, text, reference, fields, content_hash, model,
                                  router_version, router_p_good)
           SELECT %s, doc_key, text, reference, fields, content_hash, coalesce(model, %s),
                  %s::integer, router_p_good FROM staging
           ON CONFLICT (job_id, doc_key) DO NOTHING""",
        (job_id, entry, routed[0] if routed else None),
    ).rowcount
    sampled = attach(conn, job, job_id, task, audit) if audit is not None else 0
    conn.commit()
    dispatched = fill_window(conn, window)
    return SubmitResult(
        job=job, job_id=job_id, read=read, added=added, dispatched=dispatched, audited=sampled, audit=audit
    )


def fill_window(conn: psycopg.Connection, window: int) -> list[Dispatch]:
    dispatched = ledger.top_up(conn, window)  # in a transaction of its own, ended here
    conn.commit()
    return dispatched


def _job(
    conn: psycopg.Connection,
    name: str,
    task: str,
    entry: str,
    kind: str = "live",
    budget_usd: Decimal | None = None,
) -> int:
    conn.execute(
        """INSERT INTO jobs (name, task, entry_model, kind, budget_usd) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (name) DO NOTHING""",
        (name, task, entry, kind, budget_usd),
    )
    row = conn.execute("SELECT id, task, kind FROM jobs WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise RuntimeError(f"job {name!r} vanished while submitting")
    if row[1] != task:
        raise InputError(f"job {name!r} already exists with task {row[1]!r}, not {task!r}; use another --job")
    if row[2] != kind:
        raise InputError(f"job {name!r} already exists as a {row[2]} job, not {kind}; use another --job")
    return int(row[0])


def _check_staging(conn: psycopg.Connection, job_id: int) -> None:
    dup = conn.execute(
        """SELECT doc_key, array_agg(source ORDER BY source) FROM staging
           GROUP BY doc_key HAVING count(*) > 1 LIMIT 3"""
    ).fetchall()
    if dup:
        raise DuplicateIdsError([(str(key), list(sources)) for key, sources in dup])
    changed = conn.execute(
        """SELECT s.doc_key, s.source FROM staging s
           JOIN prompts p ON p.job_id = %s AND p.doc_key = s.doc_key
           WHERE p.content_hash <> s.content_hash LIMIT 3""",
        (job_id,),
    ).fetchall()
    if changed:
        detail = "; ".join(f"{source}: id {key!r}" for key, source in changed)
        raise InputError(f"documents already in this job with different content (use a new --job): {detail}")

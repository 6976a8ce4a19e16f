"""Read-only views of one job: lookup, `herd status` and `herd export`."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import IO

import psycopg

from herd.jobs.skipped import Skipped, listed
from herd.jobs.spreadsheet import safe_row
from herd.ledger.jobs import job_id
from herd.policy.job_budget import spent_usd


@dataclass(frozen=True)
class ModelStats:
    model: str
    attempts: int
    errors: int
    escalated: int
    finals: int
    mean_latency_s: float | None
    prompt_tokens: int
    generated_tokens: int

    @property
    def escalation_rate(self) -> float:
        answered = self.attempts - self.errors
        return self.escalated / answered if answered else 0.0


@dataclass(frozen=True)
class JobStatus:
    job: str
    task: str
    states: dict[str, int]
    models: list[ModelStats] = field(default_factory=list)
    elapsed_s: float | None = None
    kind: str = "live"
    budget_usd: Decimal | None = None
    spent_usd: Decimal | None = None  # attributed cost so far; read only for a budget job
    kept_for_budget: int = 0  # answers kept at their model because the budget ran out
    reserved_usd: Decimal = Decimal(0)  # estimates of the escalations in flight (herd/policy/job_budget.py)
    skipped: list[Skipped] = field(default_factory=list)  # unreadable files (--skip-unreadable)
    chunks: int = 0  # chunk prompts of long documents (herd/cascade/chunks.py), not in `states`
    # Why prompts failed: (reason, prompts, one document id), most frequent first, at most FAILURE_ROWS.
    failures: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def finished(self) -> int:
        return self.states.get("done", 0) + self.states.get("failed", 0)

    @property
    def throughput(self) -> float | None:
        """Finished prompts per second, from the first attempt started to the last one recorded."""
        if not self.elapsed_s or not self.finished:
            return None
        return self.finished / self.elapsed_s


def status(conn: psycopg.Connection, name: str) -> JobStatus:
    jid, task = job_id(conn, name)
    states = {state: 0 for state in ("pending", "queued", "held", "done", "failed")}
    # Documents only: a long document's chunks are prompts too, counted apart (`chunks`).
    for state, count in conn.execute(
        "SELECT state, count(*) FROM prompts WHERE job_id = %s AND parent_id IS NULL GROUP BY state", (jid,)
    ).fetchall():
        states[state] = int(count)
    rows = conn.execute(
        """SELECT a.model, count(*), count(*) FILTER (WHERE a.status = 'error'),
                  count(*) FILTER (WHERE a.escalated), count(f.prompt_id), avg(a.latency_s),
                  coalesce(sum(a.prompt_tokens), 0), coalesce(sum(a.generated_tokens), 0)
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id
           LEFT JOIN finals f ON f.attempt_id = a.id
           WHERE p.job_id = %s GROUP BY a.model ORDER BY min(a.id)""",
        (jid,),
    ).fetchall()
    models = [
        ModelStats(
            model=r[0],
            attempts=r[1],
            errors=r[2],
            escalated=r[3],
            finals=r[4],
            mean_latency_s=float(r[5]) if r[5] is not None else None,
            prompt_tokens=int(r[6]),
            generated_tokens=int(r[7]),
        )
        for r in rows
    ]
    span = conn.execute(
        """SELECT extract(epoch FROM max(a.finished_at) - min(coalesce(a.started_at, a.finished_at)))
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id WHERE p.job_id = %s""",
        (jid,),
    ).fetchone()
    elapsed = float(span[0]) if span and span[0] is not None else None
    if not states["held"]:
        del states["held"]  # only budget jobs hold candidates; keep the usual line short
    st = JobStatus(job=name, task=task, states=states, models=models, elapsed_s=elapsed)
    if states["failed"]:
        st = replace(st, failures=failure_reasons(conn, jid))
    return _with_documents(conn, jid, _with_budget(conn, jid, st))


FAILURE_ROWS = 5


def failure_reasons(
    conn: psycopg.Connection, jid: int, limit: int = FAILURE_ROWS
) -> list[tuple[str, int, str]]:
    """The reasons the job's failed documents failed (prompts.error, as recorded), grouped: up to
    `limit` (reason, number of documents, one document id), most frequent first. The whole list is
    one query away: `SELECT doc_key, error FROM prompts WHERE state = 'failed'` (docs/sql.md)."""
    rows = conn.execute(
        """SELECT coalesce(error, '(no reason recorded)'), count(*), min(doc_key)
           FROM prompts WHERE job_id = %s AND parent_id IS NULL AND state = 'failed'
           GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %s""",
        (jid, limit),
    ).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def _with_documents(conn: psycopg.Connection, jid: int, st: JobStatus) -> JobStatus:
    """Unreadable files skipped at submit and chunk prompts of long documents (migration 0007)."""
    row = conn.execute(
        "SELECT count(*) FROM prompts WHERE job_id = %s AND parent_id IS NOT NULL", (jid,)
    ).fetchone()
    return replace(st, skipped=listed(conn, jid), chunks=int(row[0]) if row else 0)


def _with_budget(conn: psycopg.Connection, jid: int, st: JobStatus) -> JobStatus:
    """Kind, budget, attributed spend and answers kept for lack of budget (migration 0005)."""
    row = conn.execute(
        """SELECT j.kind, j.budget_usd, count(p.id) FILTER (WHERE p.note = 'budget'),
                  coalesce(sum(p.reserved_usd), 0)
           FROM jobs j LEFT JOIN prompts p ON p.job_id = j.id WHERE j.id = %s GROUP BY j.id""",
        (jid,),
    ).fetchone()
    if row is None:
        return st
    spent = None
    if row[1] is not None:
        spent = spent_usd(conn, jid)
    return replace(
        st,
        kind=str(row[0]),
        budget_usd=row[1],
        spent_usd=spent,
        kept_for_budget=int(row[2]),
        reserved_usd=Decimal(row[3]),
    )


# note: 'budget' when the answer was kept because the job's budget ran out (herd/policy/job_budget.py).
EXPORT_COLUMNS = ("id", "answer", "model", "reference", "margin", "note")


def final_answers(conn: psycopg.Connection, name: str) -> Iterator[dict[str, object]]:
    """Final answers in submission order, streamed with a server-side cursor."""
    jid, _ = job_id(conn, name)
    with conn.cursor(name="herd_export") as cur:
        cur.itersize = 5000
        cur.execute(
            """SELECT p.doc_key, f.answer, f.model, p.reference, a.first_token_margin, p.note
               FROM finals f JOIN prompts p ON p.id = f.prompt_id JOIN attempts a ON a.id = f.attempt_id
               WHERE p.job_id = %s AND p.parent_id IS NULL ORDER BY p.id""",
            (jid,),
        )
        for row in cur:
            yield dict(zip(EXPORT_COLUMNS, row, strict=True))
    # Files that could not be read: a row each, after the answers, with the reason in `note`.
    for skipped in listed(conn, jid):
        yield {
            "id": skipped.doc_key,
            "answer": None,
            "model": None,
            "reference": None,
            "margin": None,
            "note": f"skipped: {skipped.path}: {skipped.reason}",
        }


def export(conn: psycopg.Connection, name: str, out: IO[str], fmt: str) -> int:
    rows = final_answers(conn, name)
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(safe_row(row))  # answers are model output: no formulas (services/spreadsheet.py)
            count += 1
    else:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count

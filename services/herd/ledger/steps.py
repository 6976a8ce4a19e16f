"""Every SQL statement the pipeline runs, in one place. Functions take an open connection; the caller
owns the transaction. Idempotency comes from the unique constraints, never from message counts.

Workers use autocommit connections: a single statement is its own transaction (no separate COMMIT
round trip), and several statements that must commit together run inside `conn.transaction()`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import class_row

from herd.vocabulary import FINISHED, Dispatch, PromptState, Stage, StepKey


@dataclass(frozen=True)
class PromptRow:
    id: int
    job_id: int
    task: str
    text: str
    reference: str | None
    fields: dict[str, Any]
    state: str
    model: str
    stage: str
    round: int
    kind: str = "live"  # the job's kind: 'live', 'calibration', 'direct' or 'audit'
    budget_usd: Decimal | None = None  # the job's budget, None: no cap


@dataclass(frozen=True)
class AttemptRow:
    id: int
    prompt_id: int
    model: str
    stage: str
    round: int
    status: str
    answer: str | None
    escalated: bool
    error: str | None
    first_token_margin: float | None
    mean_entropy: float | None
    max_entropy: float | None
    mean_nll: float | None

    def uncertainty(self, measure: str) -> float | None:
        value: float | None = getattr(self, measure)
        return value


@dataclass(frozen=True)
class NewAttempt:
    prompt_id: int
    model: str
    stage: str
    round: int
    status: str
    answer: str | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    first_token_margin: float | None = None
    mean_entropy: float | None = None
    max_entropy: float | None = None
    mean_nll: float | None = None
    escalated: bool = False
    retries: int = 0
    endpoint: str | None = None
    latency_s: float | None = None
    queue_s: float | None = None
    inference_s: float | None = None
    compute_s: float | None = None
    busy_s: float | None = None
    gpu_count: int = 0
    usd_per_gpu_hour: Decimal = Decimal(0)
    error: str | None = None
    # Explicit timestamps (an import, a test's fixture). Left None, as the pipeline does, they are the
    # database's clock at insert, placed by `started_mono`/`ended_mono` (see _INSERT_ATTEMPT).
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # As the server reported it ("length": cut off at max_new_tokens), for answers and errors alike.
    finish_reason: str | None = None
    # Tokens of the document left out to fit the model's context (long_documents: truncate; 0007).
    dropped_tokens: int | None = None
    # The token logprobs an OpenAI request's caller asked for, in OpenAI's shape (a psycopg Jsonb;
    # herd/cascade/requests.py); None when none were asked for (0012).
    logprobs: object | None = None
    # When the call started and ended on this process's monotonic clock (time.monotonic(), seconds):
    # not columns. Durations on one host's monotonic clock are right whatever its wall clock says.
    started_mono: float | None = None
    ended_mono: float | None = None

    def uncertainty(self, measure: str) -> float | None:
        value: float | None = getattr(self, measure)
        return value


_ATTEMPT_FIELDS = tuple(AttemptRow.__dataclass_fields__)
_ATTEMPT_COLUMNS = ", ".join(_ATTEMPT_FIELDS)
_PROMPT_WIDTH = len(PromptRow.__dataclass_fields__)
_REVIEW_AT = _PROMPT_WIDTH + len(_ATTEMPT_FIELDS)


# Built once: the worker runs it once per message (psycopg prepares it by its text after a few uses).
_LOAD_STEP = f"""SELECT p.id, p.job_id, j.task, p.text, p.reference, p.fields, p.state,
                   p.model, p.stage, p.round, j.kind, j.budget_usd,
                   {", ".join(f"a.{name}" for name in _ATTEMPT_FIELDS)},
                   CASE WHEN %(stage)s <> 'answer' AND a.id IS NULL THEN
                       (SELECT l.answer FROM attempts l
                        WHERE l.prompt_id = p.id AND l.model = %(model)s
                          AND l.stage IN ('answer', 'refine') AND l.status = 'ok'
                        ORDER BY l.round DESC LIMIT 1)
                   END,
                   CASE WHEN %(stage)s <> 'answer' AND a.id IS NULL THEN
                       (SELECT c.answer FROM attempts c
                        WHERE c.prompt_id = p.id AND c.model = %(model)s
                          AND c.stage = 'critique' AND c.round = %(round)s)
                   END
            FROM prompts p JOIN jobs j ON j.id = p.job_id
            LEFT JOIN attempts a ON a.prompt_id = p.id
                 AND a.model = %(model)s AND a.stage = %(stage)s AND a.round = %(round)s
            WHERE p.id = %(id)s"""

# Every other NewAttempt field is a column of `attempts`, passed by name (`_attempt_params`).
_TIMES = ("started_at", "finished_at", "started_mono", "ended_mono")
_NEW_FIELDS = tuple(name for name in NewAttempt.__dataclass_fields__ if name not in _TIMES)
# One clock: an attempt's timestamps enter the job's window and the cost shares of its endpoint
# (migrations 0009/0010), so they come from the database, never from the worker's wall clock (a host
# 10 minutes ahead made a job's provisioned cost 96 times and its attributed cost twice what it was).
# The call ended `ago_s` before the statement (measured on the worker's monotonic clock, from the
# call's end to now) and lasted `span_s`; statement_timestamp() is one value for the whole statement.
_INSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(_NEW_FIELDS)}, started_at, finished_at) "
    f"VALUES ({', '.join(f'%({name})s' for name in _NEW_FIELDS)}, "
    "coalesce(%(started_at)s::timestamptz,"
    " statement_timestamp() - make_interval(secs => %(ago_s)s + %(span_s)s)), "
    "coalesce(%(finished_at)s::timestamptz, statement_timestamp() - make_interval(secs => %(ago_s)s)))"
)


def _attempt_params(attempt: NewAttempt) -> dict[str, Any]:
    """`attempt`'s fields as statement parameters, with `ago_s` and `span_s` (seconds, >= 0) from its
    monotonic stamps; an attempt without them is placed at the statement's time, lasting 0 s."""
    now = time.monotonic()
    ended = attempt.ended_mono if attempt.ended_mono is not None else now
    started = attempt.started_mono if attempt.started_mono is not None else ended
    return {**attempt.__dict__, "ago_s": max(0.0, now - ended), "span_s": max(0.0, ended - started)}


@dataclass(frozen=True)
class StepState:
    """Everything phase 1 of a step needs, read in one round trip (see `load_step`)."""

    prompt: PromptRow
    attempt: AttemptRow | None  # already recorded for this step: a redelivery replays it
    review: tuple[str, str] | None  # critique/refine: (answer under review, critique of it)


def load_step(conn: psycopg.Connection, prompt_id: int, step: StepKey) -> StepState | None:
    """The prompt with its job's task, the attempt already recorded for `step` if any and, for a
    critique or refine step not yet recorded, the model's latest answer and this round's critique.

    One statement instead of three or four: on an autocommit connection that is one round trip, and a
    worker runs it once per message. The review subqueries run only when their CASE needs them."""
    row = conn.execute(
        _LOAD_STEP,
        {"id": prompt_id, "model": step.model, "stage": step.stage, "round": step.round},
    ).fetchone()
    if row is None:
        return None
    prompt = PromptRow(*row[:_PROMPT_WIDTH])
    attempt_at = _PROMPT_WIDTH
    attempt = AttemptRow(*row[attempt_at:_REVIEW_AT]) if row[attempt_at] is not None else None
    review = None
    if step.stage != Stage.ANSWER and attempt is None:
        review = (row[_REVIEW_AT] or "", row[_REVIEW_AT + 1] or "")
    return StepState(prompt, attempt, review)


def find_attempt(conn: psycopg.Connection, prompt_id: int, step: StepKey) -> AttemptRow | None:
    with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        cur.execute(
            f"""SELECT {_ATTEMPT_COLUMNS} FROM attempts
                WHERE prompt_id = %s AND model = %s AND stage = %s AND round = %s""",
            (prompt_id, step.model, step.stage, step.round),
        )
        return cur.fetchone()


def latest_answer(conn: psycopg.Connection, prompt_id: int, model: str) -> AttemptRow | None:
    """The model's current answer to the prompt: its last refinement, else its first answer."""
    with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        cur.execute(
            f"""SELECT {_ATTEMPT_COLUMNS} FROM attempts
                WHERE prompt_id = %s AND model = %s AND stage IN ('answer', 'refine') AND status = 'ok'
                ORDER BY round DESC LIMIT 1""",
            (prompt_id, model),
        )
        return cur.fetchone()


def insert_attempt(conn: psycopg.Connection, attempt: NewAttempt) -> AttemptRow:
    """Record an attempt; if one already exists for the same step (a duplicate delivery), return it."""
    with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        cur.execute(
            f"""{_INSERT_ATTEMPT}
                ON CONFLICT ON CONSTRAINT uq_attempts_step DO NOTHING
                RETURNING {_ATTEMPT_COLUMNS}""",
            _attempt_params(attempt),
        )
        row = cur.fetchone()
    if row is not None:
        return row
    existing = find_attempt(conn, attempt.prompt_id, StepKey(attempt.model, attempt.stage, attempt.round))
    if existing is None:
        raise RuntimeError(
            f"attempt conflict without a row for prompt {attempt.prompt_id} on {attempt.model}"
        )
    return existing


# record_final's one statement, built once (see its docstring).
_RECORD_FINAL = f"""WITH attempt AS (
        {_INSERT_ATTEMPT}
        ON CONFLICT ON CONSTRAINT uq_attempts_step DO NOTHING
        RETURNING id, prompt_id, model, answer),
    final AS (
        INSERT INTO finals (prompt_id, attempt_id, model, answer)
        SELECT prompt_id, id, model, coalesce(answer, '') FROM attempt
        ON CONFLICT (prompt_id) DO NOTHING),
    done AS (
        UPDATE prompts SET state = 'done', finished_at = now(), error = NULL,
                           policy_version = %(policy_version_)s
        WHERE id = (SELECT prompt_id FROM attempt) AND state <> 'done'
        RETURNING id),
    -- Every statement of the WITH sees the rows as they were before it: `freed` is the
    -- prompt's state before `done`, so a slot is handed on only if the prompt held one.
    freed AS (
        SELECT FROM done JOIN prompts before ON before.id = done.id AND before.state = 'queued'),
    refill AS (
        UPDATE prompts SET state = 'queued', enqueued_at = now()
        WHERE id IN (SELECT id FROM prompts
                     WHERE state = 'pending' AND EXISTS (SELECT FROM freed)
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id, model, stage, round)
    SELECT (SELECT count(*) FROM attempt), refill.id, refill.model, refill.stage, refill.round
    FROM (SELECT) AS one LEFT JOIN refill ON true"""


def record_final(
    conn: psycopg.Connection, attempt: NewAttempt, policy_version: int | None = None
) -> list[Dispatch] | None:
    """The common end of a step in ONE statement (so one round trip and, on an autocommit connection,
    its own transaction): record `attempt`, keep its answer as the prompt's final one, mark the prompt
    done and claim one pending prompt for the window. The caller has decided the attempt is final.

    Returns the claimed refill (empty when nothing is pending), or None, having written nothing, when
    the step's attempt already exists (a concurrent duplicate delivery): the caller then takes the
    general path, which replays the stored attempt. Same statements as insert_attempt + finalize +
    refill, chained through the inserted row instead of three more round trips.
    `policy_version`: the policy version that decided (None: the herd file), stored on the prompt."""
    rows = conn.execute(
        _RECORD_FINAL,
        {**_attempt_params(attempt), "policy_version_": policy_version},
    ).fetchall()
    if not rows or rows[0][0] == 0:
        return None
    return [(row[1], row[2], row[3], row[4]) for row in rows if row[1] is not None]


def advance(conn: psycopg.Connection, prompt_id: int, src: StepKey, dst: StepKey) -> bool:
    """Move the prompt to its next step (refinement or escalation). False if another delivery did."""
    cur = conn.execute(
        """UPDATE prompts SET model = %s, stage = %s, round = %s, state = 'queued', enqueued_at = now()
           WHERE id = %s AND model = %s AND stage = %s AND round = %s AND state = 'queued'""",
        (dst.model, dst.stage, dst.round, prompt_id, src.model, src.stage, src.round),
    )
    return cur.rowcount == 1


def hold(conn: psycopg.Connection, prompt_id: int, at: StepKey, confidence: float | None) -> bool:
    """Park a budget job's escalation candidate as 'held' at step `at` (herd/policy/job_budget.py releases
    it or keeps its answer). False if another delivery moved the prompt already."""
    cur = conn.execute(
        """UPDATE prompts SET state = 'held', held_confidence = %s
           WHERE id = %s AND model = %s AND stage = %s AND round = %s AND state = 'queued'""",
        (confidence, prompt_id, at.model, at.stage, at.round),
    )
    return cur.rowcount == 1


def set_policy_version(conn: psycopg.Connection, prompt_id: int, version: int | None) -> None:
    """Record which policy version decided the prompt's latest step (None: the herd file)."""
    conn.execute("UPDATE prompts SET policy_version = %s WHERE id = %s", (version, prompt_id))


def mark_escalated(conn: psycopg.Connection, attempt_id: int) -> None:
    conn.execute("UPDATE attempts SET escalated = true WHERE id = %s", (attempt_id,))


def finalize(conn: psycopg.Connection, prompt_id: int, attempt_id: int, model: str, answer: str) -> bool:
    """Store the one final answer and mark the prompt done. True if this freed a slot of the dispatch
    window (the prompt was `queued`); False for a duplicate delivery, which must not refill."""
    conn.execute(
        """INSERT INTO finals (prompt_id, attempt_id, model, answer) VALUES (%s, %s, %s, %s)
           ON CONFLICT (prompt_id) DO NOTHING""",
        (prompt_id, attempt_id, model, answer),
    )
    return _leave(conn, prompt_id, PromptState.DONE, None, unless=(PromptState.DONE,)) == PromptState.QUEUED


def fail(conn: psycopg.Connection, prompt_id: int, error: str) -> bool:
    """Mark the prompt failed with `error`, unless it is already done or failed. True if this freed a
    slot of the dispatch window (the prompt was `queued`)."""
    return _leave(conn, prompt_id, PromptState.FAILED, error, unless=FINISHED) == PromptState.QUEUED


def _leave(
    conn: psycopg.Connection, prompt_id: int, state: str, error: str | None, *, unless: tuple[str, ...]
) -> str | None:
    """Move the prompt to the finished `state` unless it is in one of `unless`; returns the state it
    left, or None if it did not move. (An UPDATE's RETURNING shows the new row; the locked read in
    the WITH gives the old one.)"""
    row = conn.execute(
        """WITH before AS (SELECT id, state FROM prompts WHERE id = %(id)s FOR UPDATE)
           UPDATE prompts p SET state = %(state)s, finished_at = now(), error = %(error)s
           FROM before WHERE p.id = before.id AND before.state <> ALL(%(unless)s)
           RETURNING before.state""",
        {"id": prompt_id, "state": state, "error": error, "unless": list(unless)},
    ).fetchone()
    return str(row[0]) if row else None


# Key of the transaction-level advisory lock that serializes window top-ups (any constant will do;
# this one spells "herdwind").
WINDOW_LOCK = 0x6865726477696E64


def refill(conn: psycopg.Connection, freed: bool) -> list[Dispatch]:
    """A finished prompt's slot of the dispatch window goes to the oldest pending prompt: one out, one
    in, so the count of `queued` prompts cannot grow, and no lock or count is needed on this path.
    Only when `freed` (see `finalize`/`fail`): a duplicate delivery of a finished step frees nothing,
    and refilling for it would widen the window by one for the rest of the job."""
    return claim_pending(conn, 1) if freed else []


def top_up(conn: psycopg.Connection, window: int) -> list[Dispatch]:
    """Fill the dispatch window: claim pending prompts until `window` are `queued`. The caller publishes
    the returned dispatches after its commit.

    Every worker's pump and every submit tops up; counting and claiming without a lock, two of them
    would each see the same room and both fill it. A transaction-level advisory lock makes them take
    turns, so this must run inside a transaction (the lock is released at its end). Refills
    (`refill`) need no lock: they never change the count."""
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("ledger.top_up must run inside a transaction: its lock lasts until the commit")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WINDOW_LOCK,))
    return claim_pending(conn, window - count_queued(conn))


def claim_pending(conn: psycopg.Connection, limit: int) -> list[Dispatch]:
    """Move up to `limit` pending prompts (oldest first) to `queued`; the caller sends them after commit.
    Only through `refill` or `top_up`, which keep the dispatch window bounded."""
    if limit <= 0:
        return []
    rows = conn.execute(
        """UPDATE prompts SET state = 'queued', enqueued_at = now()
           WHERE id IN (SELECT id FROM prompts WHERE state = 'pending'
                        ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
           RETURNING id, model, stage, round""",
        (limit,),
    ).fetchall()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def reclaim_stale(conn: psycopg.Connection, older_than_s: float, limit: int) -> list[Dispatch]:
    """Queued prompts that have not moved for too long: their message may be lost, send again."""
    rows = conn.execute(
        """UPDATE prompts SET enqueued_at = now()
           WHERE id IN (SELECT id FROM prompts
                        WHERE state = 'queued' AND enqueued_at < now() - make_interval(secs => %s)
                        ORDER BY enqueued_at LIMIT %s FOR UPDATE SKIP LOCKED)
           RETURNING id, model, stage, round""",
        (older_than_s, limit),
    ).fetchall()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def mark_due(conn: psycopg.Connection, dispatches: list[Dispatch], stale_after_s: float) -> int:
    """Leave prompts whose message was not sent (a failed publish) due for a re-send at the next pump
    tick: their `enqueued_at` goes back to `stale_after_s` seconds ago (database clock), the moment
    `reclaim_stale` takes them. Only a prompt still `queued` at the very step of its dispatch moves (a
    step that went on meanwhile, through an older message, is not sent back). Returns how many moved.

    Without it a claim or a re-send whose publish failed kept the `enqueued_at` of the claim, and the
    prompt waited a whole stale period more (30 min with the defaults) for a message nobody sent."""
    if not dispatches:
        return 0
    ids, models, stages, rounds = (list(column) for column in zip(*dispatches, strict=True))
    return conn.execute(
        """UPDATE prompts p SET enqueued_at = least(p.enqueued_at, now() - make_interval(secs => %s))
           FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::int[]) AS d(id, model, stage, round)
           WHERE p.id = d.id AND p.state = 'queued'
             AND p.model = d.model AND p.stage = d.stage AND p.round = d.round""",
        (stale_after_s, ids, models, stages, rounds),
    ).rowcount


def count_queued(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM prompts WHERE state = 'queued'").fetchone()
    return int(row[0]) if row else 0

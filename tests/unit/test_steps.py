"""One clock (herd/ledger/steps.py `_INSERT_ATTEMPT`): an attempt's timestamps are the database's time
at insert, placed by the worker's monotonic clock, so a worker host whose wall clock is off changes no
job window and no cost."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg

from herd.ledger import steps as ledger
from tests.unit.test_costs import add_job, add_prompt


def db_now(db: psycopg.Connection) -> datetime:
    row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def times(db: psycopg.Connection, attempt_id: int) -> tuple[datetime, datetime]:
    row = db.execute("SELECT started_at, finished_at FROM attempts WHERE id = %s", (attempt_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def answered(
    prompt_id: int, started_mono: float | None = None, ended_mono: float | None = None
) -> ledger.NewAttempt:
    return ledger.NewAttempt(
        prompt_id=prompt_id,
        model="small",
        stage="answer",
        round=0,
        status="ok",
        answer="yes",
        started_mono=started_mono,
        ended_mono=ended_mono,
    )


def test_an_attempts_times_are_the_databases_placed_by_the_monotonic_clock(db: psycopg.Connection) -> None:
    job = add_job(db, "night")
    prompts = [add_prompt(db, job, f"d{i}", state="queued") for i in range(3)]
    # A call that ran 1.5 s and ended 0.5 s ago on this host's monotonic clock.
    now = time.monotonic()
    before = db_now(db)
    attempt = ledger.insert_attempt(db, answered(prompts[0], started_mono=now - 2.0, ended_mono=now - 0.5))
    after = db_now(db)
    started, finished = times(db, attempt.id)
    assert finished - started == timedelta(seconds=1.5)
    assert before - timedelta(seconds=0.5) <= finished <= after - timedelta(seconds=0.5)
    # The final path (one statement with the prompt's `done`) places them the same way.
    now = time.monotonic()
    before = db_now(db)
    assert ledger.record_final(db, answered(prompts[1], started_mono=now - 3.0, ended_mono=now - 1.0)) == []
    after = db_now(db)
    row = db.execute("SELECT id FROM attempts WHERE prompt_id = %s", (prompts[1],)).fetchone()
    assert row is not None
    started, finished = times(db, row[0])
    assert finished - started == timedelta(seconds=2.0)
    assert before - timedelta(seconds=1.0) <= finished <= after - timedelta(seconds=1.0)
    # No stamps (a step that made no call): the statement's time, lasting nothing.
    before = db_now(db)
    attempt = ledger.insert_attempt(db, answered(prompts[2]))
    started, finished = times(db, attempt.id)
    assert started == finished and before <= finished <= db_now(db)


def test_explicit_timestamps_are_kept(db: psycopg.Connection) -> None:
    prompt = add_prompt(db, add_job(db, "import"), "d0", state="queued")
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    attempt = ledger.insert_attempt(
        db,
        ledger.NewAttempt(
            prompt_id=prompt,
            model="small",
            stage="answer",
            round=0,
            status="ok",
            started_at=at,
            finished_at=at + timedelta(seconds=2),
            ended_mono=time.monotonic() - 99,
        ),
    )
    assert times(db, attempt.id) == (at, at + timedelta(seconds=2))

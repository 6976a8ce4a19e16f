"""A stored share follows its attempt's prompt, model, GPU count and price, and nothing else (migration 0018).

On real Postgres with `track_functions = 'all'`, the calls of each trigger function in the current
transaction are read from pg_stat_xact_user_functions: an escalation (herd.ledger.steps.mark_escalated,
and a step's Escalate decision through herd.ledger.decisions.apply) runs 0009's note (the positive
control: the counting works) and never the share sync; a change of model, price, GPU count or prompt
notes each changed attempt and syncs their shares once per statement, and the share, the running
totals and the live views agree afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from herd.ledger.decisions import Escalate, apply
from herd.ledger.shares import fill
from herd.ledger.steps import mark_escalated
from herd.vocabulary import OutcomeKind, StepKey
from tests.unit.test_cost_rollups import job_run
from tests.unit.test_cost_share_totals import assert_totals_exact
from tests.unit.test_cost_shares import horizon_at
from tests.unit.test_costs import add_attempt, add_job, add_prompt

SYNC = "cost_share_attempt_sync"
MARK = "cost_share_resync_mark"
NOTE = "cost_shares_note"


def calls(db: psycopg.Connection) -> dict[str, int]:
    """How often each function ran, as pg_stat_xact_user_functions has it (track_functions = 'all')."""
    rows = db.execute("SELECT funcname, sum(calls) FROM pg_stat_xact_user_functions GROUP BY 1").fetchall()
    return {name: int(n) for name, n in rows}


@contextmanager
def counted(db: psycopg.Connection) -> Iterator[dict[str, int]]:
    """A transaction in which the calls of every function are counted: the dict holds those that ran
    (name: calls) when the block ends, read before the commit. pg_stat_xact_user_functions also holds
    the calls of earlier transactions whose statistics the backend has not flushed yet (it does so when
    idle, at most once a second), so the count is the difference across the block."""
    got: dict[str, int] = {}
    with db.transaction():
        before = calls(db)
        yield got
        after = calls(db)
        got.update({f: n - before.get(f, 0) for f, n in after.items() if n > before.get(f, 0)})


@pytest.fixture
def filled(db: psycopg.Connection) -> psycopg.Connection:
    """Two jobs of attempts, every share stored (the fill to now), function calls tracked."""
    rng = random.Random(3)
    job_run(db, "night", 0, 12, rng)
    job_run(db, "other", 0, 6, rng)
    fill(db, horizon_s=horizon_at(db, 200))
    db.execute("SET track_functions = 'all'")
    return db


def shared(db: psycopg.Connection) -> list[int]:
    return [r[0] for r in db.execute("SELECT attempt_id FROM cost_shares ORDER BY 1").fetchall()]


def test_an_escalation_runs_no_share_sync(filled: psycopg.Connection) -> None:
    db = filled
    ids = shared(db)[:3]
    assert len(ids) == 3
    with counted(db) as ran:
        for attempt_id in ids:
            mark_escalated(db, attempt_id)
    # 0009's update triggers (old and new rows) ran, the counting works; nothing else did.
    assert ran == {NOTE: 2 * len(ids)}
    # The step path: a decision to escalate that marks the answer escalated (herd.ledger.decisions).
    night = db.execute("SELECT id FROM jobs WHERE name = 'night'").fetchone()
    assert night is not None
    prompt = add_prompt(db, night[0], "unsure", state="queued")
    answer = add_attempt(db, prompt, "small", 300, 301)
    with counted(db) as ran:
        applied = apply(db, prompt, StepKey("small"), Escalate("big", mark=answer))
    assert applied.kind == OutcomeKind.ESCALATED and applied.dispatches == ((prompt, "big", "answer", 0),)
    assert db.execute("SELECT escalated FROM attempts WHERE id = %s", (answer,)).fetchone() == (True,)
    assert ran == {NOTE: 2}
    # Setting the synced columns to the values they have is filtered by the row trigger's WHEN: no
    # attempt is noted, and the statement's sync finds nothing to change.
    with counted(db) as ran:
        db.execute(
            "UPDATE attempts SET model = model, usd_per_gpu_hour = usd_per_gpu_hour WHERE id = ANY(%s)",
            (ids,),
        )
    assert MARK not in ran and ran[SYNC] == 1
    assert_totals_exact(db)
    assert db.execute("SELECT count(*) FROM cost_share_resync").fetchone() == (0,)


def test_a_changed_model_price_or_prompt_moves_the_share(filled: psycopg.Connection) -> None:
    db = filled
    ids = shared(db)
    first, second, third = ids[0], ids[1], ids[2]
    with counted(db) as ran:
        db.execute("UPDATE attempts SET model = 'medium' WHERE id = %s", (first,))
        db.execute("UPDATE attempts SET usd_per_gpu_hour = 2.5, gpu_count = 4 WHERE id = %s", (second,))
    assert (ran[MARK], ran[SYNC]) == (2, 2)  # one note per changed attempt, one sync per statement
    # The share's figures are 0003's expressions of the new GPU count and price, digit for digit.
    share = db.execute(
        """SELECT gpu_s::text = (shared_s * 4)::text,
                  cost_usd::text = (shared_s * 4 * 2.5::numeric(12, 6) / 3600)::text
           FROM cost_shares WHERE attempt_id = %s""",
        (second,),
    ).fetchone()
    assert share == (True, True)
    assert db.execute("SELECT model FROM cost_shares WHERE attempt_id = %s", (first,)).fetchone() == (
        "medium",
    )
    # An attempt moved to a prompt of another job: its share (and its totals) move with it.
    elsewhere = add_job(db, "elsewhere")
    moved = db.execute(
        """INSERT INTO prompts (job_id, doc_key, text, content_hash, state, model)
           VALUES (%s, 'moved', 'q', 'moved', 'done', 'small') RETURNING id""",
        (elsewhere,),
    ).fetchone()
    assert moved is not None
    db.execute("UPDATE attempts SET prompt_id = %s WHERE id = %s", (moved[0], third))
    moved_share = db.execute("SELECT job_id FROM cost_shares WHERE attempt_id = %s", (third,)).fetchone()
    assert moved_share == (elsewhere,)
    assert_totals_exact(db)
    # A repricing of many attempts at once, as 0017's statement trigger handled in one UPDATE.
    db.execute("UPDATE attempts SET usd_per_gpu_hour = usd_per_gpu_hour + 0.125")
    assert_totals_exact(db)
    assert db.execute("SELECT count(*) FROM cost_share_resync").fetchone() == (0,)

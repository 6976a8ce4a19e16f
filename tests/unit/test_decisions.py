"""herd/ledger/decisions.py on real Postgres: `apply` writes each kind of decision once, and a duplicate
delivery of the same decision writes and dispatches nothing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from herd.jobs.documents import Record
from herd.jobs.submit import submit
from herd.ledger import steps
from herd.ledger.decisions import Advance, Applied, Escalate, Fail, Final, Hold, apply
from herd.ledger.steps import NewAttempt
from herd.vocabulary import OutcomeKind, StepKey
from tests.support.cascade import load

SMALL = StepKey("small")


def queued_prompt(db: psycopg.Connection, tmp_path: Path, *, budget: bool = False) -> int:
    with psycopg.connect(db.info.dsn, password=db.info.password) as conn:
        result = submit(
            conn,
            load(tmp_path),
            job="j",
            task="qa",
            records=[Record("d1", "2+2?", "4", {}, "t:1")],
            window=10,
            budget_usd=Decimal("5") if budget else None,
        )
    return result.dispatched[0][0]


def answered(db: psycopg.Connection, prompt_id: int, *, escalated: bool = False) -> steps.AttemptRow:
    attempt = NewAttempt(prompt_id, "small", "answer", 0, "ok", answer="4", escalated=escalated)
    return steps.insert_attempt(db, attempt)


def prompt(db: psycopg.Connection, prompt_id: int) -> tuple[str, str, str, int, int | None, str | None]:
    row = db.execute(
        "SELECT state, model, stage, round, policy_version, error FROM prompts WHERE id = %s", (prompt_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3], row[4], row[5]


def test_advance_moves_the_prompt_once(db: psycopg.Connection, tmp_path: Path) -> None:
    pid = queued_prompt(db, tmp_path)
    critique = StepKey("small", "critique", 1)
    assert apply(db, pid, SMALL, Advance(critique)) == Applied(
        OutcomeKind.REFINING, ((pid, "small", "critique", 1),)
    )
    assert prompt(db, pid)[:4] == ("queued", "small", "critique", 1)
    # The same message again: the prompt has moved on, nothing to dispatch.
    assert apply(db, pid, SMALL, Advance(critique)) == Applied(OutcomeKind.REFINING, ())


def test_escalate_marks_the_answer_records_the_version_and_moves_on(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    pid = queued_prompt(db, tmp_path)
    attempt = answered(db, pid)
    decision = Escalate("large", mark=attempt.id, version=3)
    assert apply(db, pid, SMALL, decision) == Applied(OutcomeKind.ESCALATED, ((pid, "large", "answer", 0),))
    assert prompt(db, pid)[:5] == ("queued", "large", "answer", 0, 3)
    assert steps.find_attempt(db, pid, SMALL).escalated  # type: ignore[union-attr]
    assert apply(db, pid, SMALL, decision) == Applied(OutcomeKind.ESCALATED, ())


def test_final_keeps_the_answer_and_frees_the_slot_once(db: psycopg.Connection, tmp_path: Path) -> None:
    pid = queued_prompt(db, tmp_path)
    attempt = answered(db, pid)
    assert apply(db, pid, SMALL, Final(attempt)) == Applied(OutcomeKind.FINAL, freed=True)
    assert prompt(db, pid)[0] == "done"
    final = db.execute("SELECT attempt_id, model, answer FROM finals WHERE prompt_id = %s", (pid,)).fetchone()
    assert final == (attempt.id, "small", "4")
    assert apply(db, pid, SMALL, Final(attempt)) == Applied(OutcomeKind.FINAL, freed=False)


def test_a_final_answer_must_be_recorded_first(db: psycopg.Connection, tmp_path: Path) -> None:
    pid = queued_prompt(db, tmp_path)
    new = NewAttempt(pid, "small", "answer", 0, "ok", answer="4")
    with pytest.raises(TypeError, match=f"prompt {pid}: a final answer must be recorded"):
        apply(db, pid, SMALL, Final(new))
    assert prompt(db, pid)[0] == "queued"


def test_fail_records_the_reason_once(db: psycopg.Connection, tmp_path: Path) -> None:
    pid = queued_prompt(db, tmp_path)
    assert apply(db, pid, SMALL, Fail("small answer: HTTP 500")) == Applied(OutcomeKind.FAILED, freed=True)
    assert prompt(db, pid)[0::5] == ("failed", "small answer: HTTP 500")
    assert apply(db, pid, SMALL, Fail("again")) == Applied(OutcomeKind.FAILED, freed=False)
    assert prompt(db, pid)[5] == "small answer: HTTP 500"


def test_hold_parks_the_candidate_with_its_confidence(db: psycopg.Connection, tmp_path: Path) -> None:
    pid = queued_prompt(db, tmp_path, budget=True)
    attempt = answered(db, pid, escalated=True)
    assert apply(db, pid, SMALL, Hold(0.25, mark=attempt.id)) == Applied(OutcomeKind.HELD, freed=True)
    row = db.execute("SELECT state, held_confidence FROM prompts WHERE id = %s", (pid,)).fetchone()
    assert row == ("held", 0.25)
    assert apply(db, pid, SMALL, Hold(0.25)) == Applied(OutcomeKind.HELD, freed=False)

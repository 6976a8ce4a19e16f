"""The cascade step in process: real Postgres, fake backends, no Celery. One test per decision the
pipeline makes; the worker plumbing around it is tested in tests/integration/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from herd.backends.base import PermanentError, RetryableError
from herd.cascade.pipeline import Pipeline
from herd.herdfile.model import HerdConfig
from herd.jobs.documents import Record
from herd.jobs.submit import submit
from herd.vocabulary import StepKey
from tests.support.cascade import load
from tests.support.fakes import FakeBackend, generation
from tests.support.harness import Services


@pytest.fixture
def connect(services: Services, db: psycopg.Connection) -> Iterator[object]:
    @contextmanager
    def open_conn() -> Iterator[psycopg.Connection]:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            yield conn

    yield open_conn


def one_prompt(db: psycopg.Connection, herd: HerdConfig, text: str = "What is 2+2?") -> int:
    with psycopg.connect(db.info.dsn, password=db.info.password) as conn:
        result = submit(
            conn, herd, job="j", task="qa", records=[Record("d1", text, "4", {}, "t:1")], window=10
        )
    assert [d[1:] for d in result.dispatched] == [("small", "answer", 0)]
    return result.dispatched[0][0]


def state(db: psycopg.Connection, prompt_id: int) -> tuple[str, str, str | None]:
    row = db.execute(
        "SELECT p.state, p.model, f.answer FROM prompts p LEFT JOIN finals f ON f.prompt_id = p.id "
        "WHERE p.id = %s",
        (prompt_id,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def attempts(db: psycopg.Connection, prompt_id: int) -> list[tuple[str, str, str, bool]]:
    return [
        (r[0], r[1], r[2], r[3])
        for r in db.execute(
            "SELECT model, stage, status, escalated FROM attempts WHERE prompt_id = %s ORDER BY id",
            (prompt_id,),
        )
    ]


def test_a_sure_answer_is_final(tmp_path: Path, db: psycopg.Connection, connect) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    small, large = FakeBackend(generation("4", p_first=0.95)), FakeBackend()
    pid = one_prompt(db, herd)
    outcome = Pipeline(herd, {"small": small, "large": large}, connect).run(pid, StepKey("small"))
    assert outcome.kind == "final"
    assert state(db, pid) == ("done", "small", "4")
    assert attempts(db, pid) == [("small", "answer", "ok", False)]
    assert large.requests == []


def test_an_unsure_answer_escalates_and_the_next_model_decides(tmp_path: Path, db, connect) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    small, large = FakeBackend(generation("5", p_first=0.6)), FakeBackend(generation("4", p_first=0.55))
    pipeline = Pipeline(herd, {"small": small, "large": large}, connect)
    pid = one_prompt(db, herd)
    first = pipeline.run(pid, StepKey("small"))
    assert first.kind == "escalated" and first.dispatches == ((pid, "large", "answer", 0),)
    assert state(db, pid) == ("queued", "large", None)
    # The last tier never escalates, however unsure.
    assert pipeline.run(pid, StepKey("large")).kind == "final"
    assert state(db, pid) == ("done", "large", "4")
    assert attempts(db, pid) == [("small", "answer", "ok", True), ("large", "answer", "ok", False)]


def test_refinement_rounds_then_the_refined_answer_is_kept(tmp_path: Path, db, connect) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path, refine="refine: {rounds: 1}")
    small = FakeBackend(generation("5", p_first=0.52))
    large = FakeBackend().queue(generation("four"), generation("Say it as a digit."), generation("4"))
    pipeline = Pipeline(herd, {"small": small, "large": large}, connect)
    pid = one_prompt(db, herd)
    pipeline.run(pid, StepKey("small"))
    out = pipeline.run(pid, StepKey("large"))
    assert out.dispatches == ((pid, "large", "critique", 1),), (out, attempts(db, pid), state(db, pid))
    assert pipeline.run(pid, StepKey("large", "critique", 1)).dispatches == ((pid, "large", "refine", 1),)
    assert pipeline.run(pid, StepKey("large", "refine", 1)).kind == "final"
    assert state(db, pid) == ("done", "large", "4")
    # The refine request carries the critique; the critique request carries the answer under review.
    assert "Say it as a digit." in str(large.requests[2].prompt)
    assert "four" in str(large.requests[1].prompt)


def test_a_redelivered_step_replays_the_stored_decision_without_calling_the_model(
    tmp_path: Path, db: psycopg.Connection, connect
) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    small, large = FakeBackend(generation("5", p_first=0.6)), FakeBackend()
    pipeline = Pipeline(herd, {"small": small, "large": large}, connect)
    pid = one_prompt(db, herd)
    pipeline.run(pid, StepKey("small"))
    # The same message again (a redelivery after the worker died before its ack): the prompt has
    # moved on, so nothing runs and nothing is recorded twice.
    assert pipeline.run(pid, StepKey("small")).kind == "skipped"
    assert len(small.requests) == 1
    assert attempts(db, pid) == [("small", "answer", "ok", True)]


def test_an_attempt_recorded_before_a_crash_is_replayed_not_repeated(tmp_path: Path, db, connect) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    small = FakeBackend(generation("4", p_first=0.95))
    pipeline = Pipeline(herd, {"small": small, "large": FakeBackend()}, connect)
    pid = one_prompt(db, herd)
    # The worker recorded the attempt, then died before moving the prompt on.
    db.execute(
        "INSERT INTO attempts (prompt_id, model, stage, round, status, answer, first_token_margin, "
        "escalated) VALUES (%s, 'small', 'answer', 0, 'ok', '4', 0.9, false)",
        (pid,),
    )
    assert pipeline.run(pid, StepKey("small")).kind == "final"
    assert small.requests == []
    assert state(db, pid) == ("done", "small", "4")


def test_a_stale_delivery_for_a_finished_prompt_is_skipped(tmp_path: Path, db, connect) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    small = FakeBackend(generation("4", p_first=0.95))
    pipeline = Pipeline(herd, {"small": small, "large": FakeBackend()}, connect)
    pid = one_prompt(db, herd)
    pipeline.run(pid, StepKey("small"))
    assert pipeline.run(pid, StepKey("large")).kind == "skipped"  # never its step
    assert pipeline.run(pid + 1000, StepKey("small")).kind == "skipped"  # a deleted prompt


def test_retryable_errors_are_raised_then_recorded_when_given_up(tmp_path: Path, db, connect) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    busy = RetryableError("429 Too Many Requests", status=429, endpoint="http://fake")
    small = FakeBackend().queue(busy)
    pipeline = Pipeline(herd, {"small": small, "large": FakeBackend()}, connect)
    pid = one_prompt(db, herd)
    with pytest.raises(RetryableError):
        pipeline.run(pid, StepKey("small"))
    assert attempts(db, pid) == []  # nothing recorded: the caller retries
    assert pipeline.run(pid, StepKey("small"), retries=3, give_up=busy).kind == "failed"
    assert state(db, pid)[0] == "failed"
    assert attempts(db, pid) == [("small", "answer", "error", False)]
    assert len(small.requests) == 1  # giving up records the error without calling the model again


def test_a_permanent_error_fails_the_prompt_with_its_reason(tmp_path: Path, db, connect) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    small = FakeBackend().queue(PermanentError("400 prompt too long", status=400, endpoint="http://fake"))
    pid = one_prompt(db, herd)
    assert Pipeline(herd, {"small": small, "large": FakeBackend()}, connect).run(
        pid, StepKey("small")
    ).kind == ("failed")
    error = db.execute("SELECT error FROM prompts WHERE id = %s", (pid,)).fetchone()
    assert error is not None and "prompt too long" in error[0]

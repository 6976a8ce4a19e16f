"""The attempt task when Redis is down: a step is never failed for the broker's fault."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kombu.exceptions
import psycopg
import pytest
from celery.exceptions import Reject

from herd.backends.base import RetryableError
from herd.broker_errors import PublishError
from herd.cascade.pipeline import Outcome
from herd.herdfile.model import Retries
from herd.settings import get_settings
from herd.vocabulary import OutcomeKind
from herd_workers import tasks
from tests.support.harness import Services
from tests.unit.test_costs import add_job, add_prompt


@dataclass
class FakePipeline:
    outcome: Outcome | None = None
    failed: list[Any] = field(default_factory=list)

    def run(self, prompt_id: int, key: Any, *, retries: int = 0, give_up: Any = None) -> Outcome:
        if self.outcome is None:
            raise RetryableError("503 Service Unavailable", status=503, endpoint="http://e")
        return self.outcome

    def fail_step(self, *args: Any, **kwargs: Any) -> Outcome:
        self.failed.append(args)
        return Outcome(OutcomeKind.FAILED)


@dataclass
class FakeContext:
    pipeline: FakePipeline
    connection: Any = None


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    fake = FakePipeline()
    monkeypatch.setattr(tasks, "get_context", lambda: FakeContext(fake))
    monkeypatch.setattr(tasks, "_policy", lambda model: Retries(max=3, backoff_s=0.0, backoff_max_s=0.0))
    return fake


def test_a_retry_the_broker_cannot_take_defers_instead_of_failing(
    pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    def retry(**_: Any) -> None:
        raise Reject(down, requeue=False)  # what Celery raises when it cannot send the retry

    monkeypatch.setattr(tasks.attempt, "retry", retry)
    assert tasks.attempt.run(1, "small") == "deferred"
    assert pipeline.failed == []


def test_messages_not_sent_after_the_commit_are_due_at_the_next_tick(
    pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch, services: Services, db: psycopg.Connection
) -> None:
    prompt = add_prompt(db, add_job(db, "night"), "d0", state="queued", model="large")
    db.execute("UPDATE prompts SET enqueued_at = now() WHERE id = %s", (prompt,))  # as the escalation left it
    pipeline.outcome = Outcome(OutcomeKind.ESCALATED, ((prompt, "large", "answer", 0),))

    def publish(dispatches: Any) -> int:
        cause = kombu.exceptions.OperationalError("Connection refused")
        raise PublishError(list(dispatches), cause) from cause

    @contextmanager
    def connection() -> Iterator[psycopg.Connection]:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            yield conn

    monkeypatch.setattr(tasks, "publish", publish)
    monkeypatch.setattr(tasks, "get_context", lambda: FakeContext(pipeline, connection))
    assert tasks.attempt.run(prompt, "small") == OutcomeKind.ESCALATED
    assert pipeline.failed == []
    # Due for the next tick's stale sweep, not a whole stale period after the escalation.
    due = db.execute(
        "SELECT enqueued_at <= now() - make_interval(secs => %s) FROM prompts WHERE id = %s",
        (get_settings().stale_after_s, prompt),
    ).fetchone()
    assert due == (True,)


def test_a_worker_that_stops_on_its_own_exits_with_a_failure() -> None:
    from herd.cli.workers import worker_exit_code

    assert worker_exit_code(0, asked_to_stop=True) == 0  # TERM from a supervisor or Ctrl-C
    assert worker_exit_code(0, asked_to_stop=False) == 1  # "Unrecoverable error" with status 0
    assert worker_exit_code(2, asked_to_stop=True) == 2

"""`herd submit` when the broker goes down after the job is written: the job stands, the command warns,
and the first housekeeping tick after the broker is back sends the messages, not a stale period later.

In process (click's runner), against real Postgres and a real redis-server of the test's own, stopped
between the submit's commit and its publish: the window a check before writing cannot close."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from click.testing import CliRunner

from herd.cli import main
from herd.embedded.servers import ensure_redis, stop_all
from herd.housekeeping.work import Housekeeping
from herd.queues import publish, queue_for
from herd.settings import Settings, get_settings
from tests.support.cascade import HERD, connector
from tests.support.harness import Services

STALE_S = 900.0  # the default stale period: what a prompt waited for its message before
PROMPTS = 4


def queued_messages(url: str, model: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(queue_for(model)))
    finally:
        client.close()


def due(db: psycopg.Connection, job: str) -> list[bool]:
    """Per queued prompt of `job`: whether the stale sweep takes it now."""
    rows = db.execute(
        """SELECT p.enqueued_at <= now() - make_interval(secs => %s) FROM prompts p
           JOIN jobs j ON j.id = p.job_id WHERE j.name = %s AND p.state = 'queued' ORDER BY p.id""",
        (STALE_S, job),
    ).fetchall()
    return [bool(row[0]) for row in rows]


def next_tick(services: Services) -> int:
    """One housekeeping tick (what `herd housekeeper` and each worker's pump run): how many it re-sent."""
    settings = Settings(dispatch_window=100, stale_after_s=STALE_S)  # type: ignore[call-arg]
    return Housekeeping(connector(services.database_url), settings, publish=publish).dispatch().resent


def test_submit_whose_broker_dies_after_the_commit_leaves_the_messages_due_at_the_next_tick(
    publishing_to_own_redis: tuple[Services, Path],
    db: psycopg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services, home = publishing_to_own_redis
    from herd.jobs import submit as submitting

    real = submitting.submit

    def then_the_broker_dies(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)  # committed
        stop_all(home)
        return result

    monkeypatch.setattr(submitting, "submit", then_the_broker_dies)
    herd_file = tmp_path / "herd.yaml"
    herd_file.write_text(HERD % {"refine": ""})
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(f'{{"id": "d{i}", "text": "question {i}"}}\n' for i in range(PROMPTS)))
    env = {"HERD_DATABASE_URL": services.database_url, "HERD_STALE_AFTER_S": str(STALE_S)}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            main, ["--herd-file", str(herd_file), "submit", str(docs), "--job", "j", "--task", "qa"], env=env
        )
    finally:
        get_settings.cache_clear()
    # The job is stored and will run by itself: a warning, not a failure to submit again.
    assert result.exit_code == 0, result.output
    assert f"added {PROMPTS} new prompts, sent 0 to the queues" in result.output
    assert f"job j is stored, but {PROMPTS} messages could not be sent" in result.output
    assert due(db, "j") == [True] * PROMPTS  # was: fresh claims, due only a stale period later

    assert ensure_redis(home) == services.broker_url  # the broker is back, on the same port
    assert next_tick(services) == PROMPTS
    assert queued_messages(services.broker_url, "small") == PROMPTS
    assert due(db, "j") == [False] * PROMPTS  # sent: not due again before the stale period

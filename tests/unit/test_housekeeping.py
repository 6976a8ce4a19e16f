"""Housekeeping (herd/housekeeping/): publish after commit and recover after failure, the seal of a
finished job at the next tick, the leader lock, and the housekeeper's health and metrics.

Real Postgres and Redis; the broker's failures are a publish that raises what kombu raises, or a
producer channel closed the way a reconnect closes it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import kombu.exceptions
import psycopg
import pytest
import redis
from celery import Celery
from kombu.connection import Connection

from herd import broker_transport
from herd.broker_errors import PublishError
from herd.embedded.servers import ensure_redis, stop_all
from herd.housekeeping.leader import LeaderLock
from herd.housekeeping.service import Housekeeper, serve
from herd.housekeeping.work import Housekeeping, seal_job
from herd.queues import app, publish
from herd.settings import Settings
from herd.vocabulary import Dispatch
from tests.support import harness
from tests.support.harness import Services
from tests.unit.test_costs import add_attempt, add_final, add_job, add_prompt

STALE_S = 900.0


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"dispatch_window": 5, "stale_after_s": STALE_S, **overrides}
    return Settings(**values)  # type: ignore[arg-type]


class Broker:
    """A publish that records what it sent, or fails like a broker that is down."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[Dispatch] = []

    def __call__(self, dispatches: Sequence[Dispatch]) -> int:
        if self.down:
            cause = kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6391.")
            raise PublishError(dispatches, cause) from cause
        self.sent += dispatches
        return len(dispatches)


def connector(services: Services):  # type: ignore[no-untyped-def] # a Connect
    @contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            yield conn

    return connect


def pending_job(db: psycopg.Connection, n: int) -> list[int]:
    job = add_job(db, "night")
    return [add_prompt(db, job, f"d{i}", state="pending") for i in range(n)]


def test_a_window_fill_the_broker_refused_is_sent_at_the_next_tick(
    services: Services, db: psycopg.Connection
) -> None:
    ids = pending_job(db, 8)
    broker = Broker()
    work = Housekeeping(connector(services), settings(), publish=broker)
    broker.down = True
    done = work.dispatch()
    assert (done.admitted, done.unsent) == (5, 5)  # claimed, committed, not sent
    broker.down = False
    done = work.dispatch()
    # Due again at once, not a stale period (900 s) later; the window stays at 5.
    assert (done.resent, done.admitted, done.unsent) == (5, 0, 0)
    assert sorted(d[0] for d in broker.sent) == ids[:5]
    assert work.dispatch().resent == 0  # sent now: not due again before the stale period


def test_a_stale_resend_the_broker_refused_is_due_again_at_the_next_tick(
    services: Services, db: psycopg.Connection
) -> None:
    ids = pending_job(db, 3)
    db.execute("UPDATE prompts SET state = 'queued', enqueued_at = now() - interval '1 hour'")
    broker = Broker()
    work = Housekeeping(connector(services), settings(), publish=broker)
    broker.down = True
    assert work.dispatch().resent == 3
    broker.down = False
    assert work.dispatch().resent == 3  # was: marked re-sent, so due again only a stale period later
    assert sorted(d[0] for d in broker.sent) == ids
    ages = db.execute("SELECT min(now() - enqueued_at) < interval '1 minute' FROM prompts").fetchone()
    assert ages == (True,)


def test_only_prompts_still_at_the_unsent_step_are_made_due(
    services: Services, db: psycopg.Connection
) -> None:
    first, moved = pending_job(db, 2)
    db.execute("UPDATE prompts SET state = 'queued', enqueued_at = now()")
    db.execute("UPDATE prompts SET model = 'large' WHERE id = %s", (moved,))  # went on meanwhile
    from herd.housekeeping.sending import send

    def refuse(dispatches: Sequence[Dispatch]) -> int:
        raise PublishError(dispatches, RuntimeError("closed channel"))

    unsent = [(first, "small", "answer", 0), (moved, "small", "answer", 0)]
    assert send(connector(services), unsent, stale_after_s=STALE_S, publish=refuse) == 2
    due = db.execute(
        "SELECT id FROM prompts WHERE enqueued_at <= now() - make_interval(secs => %s)", (STALE_S,)
    ).fetchall()
    assert due == [(first,)]


@pytest.fixture
def celery_app(services: Services) -> Iterator[Celery]:
    app.close()
    app.conf.broker_url = services.broker_url
    yield app
    app.close()


def test_a_closed_channel_fails_as_a_lost_connection_which_kombu_recovers_from(services: Services) -> None:
    broker_transport.install()
    with Connection(services.broker_url) as conn:
        channel = conn.default_channel
        recoverable = conn.recoverable_connection_errors
        channel.close()  # what a reconnect does to the channels a pooled producer may still hold
        # Was AttributeError ('NoneType' object has no attribute 'client'), which kombu's `ensure`
        # does not retry: the publish failed instead of reviving the producer on a new channel.
        with pytest.raises(recoverable):
            channel._create_client()


# One long-lived publishing process (as a worker or the housekeeper is): publish a message per line read
# from stdin, print what happened. In a process of its own: kombu keeps process-wide pools per broker.
PUBLISHER = """
import sys
from herd.queues import PublishError, publish
for n, _ in enumerate(sys.stdin):
    try:
        print("sent", publish([(n, "small", "answer", 0)]), flush=True)
    except PublishError as exc:
        print("unsent", len(exc.unsent), flush=True)
"""


def test_a_publisher_fails_while_the_broker_is_down_and_works_again_after_its_restart(
    tmp_path: Path, services: Services
) -> None:
    url = ensure_redis(tmp_path / "broker")
    env = {**harness.herd_env(services, None), "HERD_BROKER_URL": url}
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None

    def publish_one() -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        assert publish_one() == "sent 1"
        stop_all(tmp_path / "broker")
        assert publish_one() == "unsent 1"
        assert ensure_redis(tmp_path / "broker") == url  # the same port and password, its AOF replayed
        # The pooled producer and its connection are rebuilt: no restart of the process needed.
        assert publish_one() == "sent 1"
        queued = redis.Redis.from_url(url).lrange("herd.small", 0, -1)
        assert [json.loads(m)["headers"]["argsrepr"] for m in queued] == [
            "(2, 'small', 'answer', 0)",
            "(0, 'small', 'answer', 0)",
        ]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
        stop_all(tmp_path / "broker")


def test_any_failure_of_a_publish_names_the_messages_not_sent(
    services: Services, db: psycopg.Connection, celery_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = celery_app.send_task

    def flaky(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise AttributeError("'NoneType' object has no attribute 'client'")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(celery_app, "send_task", flaky)
    todo = [(1, "small", "answer", 0), (2, "small", "answer", 0), (3, "small", "answer", 0)]
    with pytest.raises(PublishError) as raised:
        publish(todo)
    assert raised.value.unsent == tuple(todo[1:]), repr(raised.value.__cause__)
    assert isinstance(raised.value.__cause__, AttributeError)


def finished_job(db: psycopg.Connection) -> int:
    job = add_job(db, "done")
    for i in range(4):
        prompt = add_prompt(db, job, f"d{i}")
        add_final(db, prompt, add_attempt(db, prompt, "small", 10 * i, 10 * i + 3), "small")
    return job


def sealed(db: psycopg.Connection) -> list[int]:
    return [int(r[0]) for r in db.execute("SELECT job_id FROM cost_rollup_jobs ORDER BY job_id").fetchall()]


def finished_moments_ago(db: psycopg.Connection) -> tuple[int, int]:
    """A finished job whose attempts ended 2 s ago (database clock), and a queued prompt of another."""
    job = finished_job(db)
    running = add_prompt(db, add_job(db, "running"), "r", state="queued")
    db.execute("UPDATE prompts SET enqueued_at = now() WHERE id = %s", (running,))
    db.execute(
        "UPDATE attempts SET started_at = now() - interval '5 s', finished_at = now() - interval '2 s'"
    )
    return job, running


def test_a_finished_job_is_sealed_at_the_next_tick_when_nothing_is_in_flight(
    services: Services, db: psycopg.Connection
) -> None:
    job, running = finished_moments_ago(db)
    work = Housekeeping(connector(services), settings(cost_share_horizon_s=300.0), publish=Broker())
    result = work.seal()
    assert result is not None and result.sealed == 0  # a request in flight may still overlap its attempts
    assert sealed(db) == []
    db.execute("UPDATE prompts SET state = 'done' WHERE id = %s", (running,))
    result = work.seal()
    assert result is not None and result.sealed == 1  # nothing in flight anywhere: final up to now
    assert sealed(db) == [job]


def test_while_others_run_a_finished_job_waits_only_as_long_as_a_request_can_last(
    services: Services, db: psycopg.Connection
) -> None:
    job, _ = finished_moments_ago(db)
    config = settings(cost_share_horizon_s=300.0)
    longer = Housekeeping(connector(services), config, longest_request_s=60.0, publish=Broker()).seal()
    assert longer is not None and longer.sealed == 0  # a 60 s request started before its attempts ended
    shorter = Housekeeping(connector(services), config, longest_request_s=1.0, publish=Broker()).seal()
    assert shorter is not None and shorter.sealed == 1  # was: 300 s (the horizon) after its last attempt
    assert sealed(db) == [job]


def test_one_leader_at_a_time_and_the_lock_passes_on_when_it_goes(services: Services) -> None:
    first, second = LeaderLock(services.database_url, key=4242), LeaderLock(services.database_url, key=4242)
    try:
        assert first.check() and not second.check()
        assert first.check()  # still held
        first.close()  # the process stops, or its connection dies
        assert second.check()
        assert not first.check()
    finally:
        first.close()
        second.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_and_metrics_of_a_leader_and_a_standby(services: Services, db: psycopg.Connection) -> None:
    pending_job(db, 3)
    broker = Broker()
    work = Housekeeping(connector(services), settings(), publish=broker)
    now = [0.0]
    keepers = [
        Housekeeper(work, LeaderLock(services.database_url, key=4343), interval_s=0.05, clock=lambda: now[0])
        for _ in range(2)
    ]
    servers = [serve(keeper, "127.0.0.1", 0) for keeper in keepers]
    try:
        for keeper in keepers:
            keeper.start()
        ports = [server.server_port for server in servers]
        import time

        deadline = time.monotonic() + 30
        while len(broker.sent) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(broker.sent) == 3  # the leader's dispatch half ran, once per prompt
        statuses = sorted(get(f"http://127.0.0.1:{port}/health") for port in ports)
        assert statuses == [(200, "leading\n"), (200, "standing by (another replica leads)\n")]
        metrics = "".join(get(f"http://127.0.0.1:{port}/metrics")[1] for port in ports)
        assert "herd_housekeeper_leader 1.0" in metrics and "herd_housekeeper_leader 0.0" in metrics
        assert "herd_housekeeper_admitted_prompts_total 3.0" in metrics
        now[0] += 3600  # no successful check for an hour, as if the database had gone
        assert get(f"http://127.0.0.1:{ports[0]}/health")[0] == 503
    finally:
        for keeper, server in zip(keepers, servers, strict=True):
            keeper.stop()
            server.shutdown()
            server.server_close()


def test_a_report_seals_a_finished_job_first_unless_it_cannot_be_final_yet(
    services: Services, db: psycopg.Connection
) -> None:
    job, running = finished_moments_ago(db)
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        # Another job's prompt is queued: its request may overlap, so the horizon (300 s) holds.
        assert not seal_job(conn, job, settings(cost_share_horizon_s=300.0))
        db.execute("UPDATE prompts SET state = 'done' WHERE id = %s", (running,))
        assert seal_job(conn, job, settings(cost_share_horizon_s=300.0))
        assert seal_job(conn, job, settings())  # sealed already: nothing to do
    assert sealed(db) == [job]

"""A worker whose Redis is SIGKILLed while it has tasks in flight: it keeps running, reconnects when
Redis is back and finishes the job from the messages Redis kept. A real redis-server of the test's
own (so the test can kill it), a real worker process, Postgres and the endpoint double.

Before, acking a task that finished after the worker dropped its broken connection (or restoring a
closing channel's unacked messages) reached kombu's `self.connection.client.hostname` on a transport
kombu had already detached, and the AttributeError stopped the worker with "Unrecoverable error" and
exit status 1 (herd/broker_transport.py). This test failed that way without the fix."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from herd.embedded.servers import ensure_redis
from tests.integration.test_cascade import CONFIDENT, jsonl
from tests.support.endpoint import EndpointDouble
from tests.support.harness import Herd, Services, herd_env, herd_yaml, start_worker

PROMPTS = 60
DELAY_S = 1.0  # each model call: calls are in flight whenever Redis dies
OUTAGES_AT = (10, 30)  # Redis is SIGKILLed when this many prompts are done, and restarted 3 s later


def job_states(db: psycopg.Connection, job: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT p.state, count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id WHERE j.name = %s "
        "GROUP BY p.state",
        (job,),
    ).fetchall()
    return {state: int(n) for state, n in rows}


def kill_redis(home: Path) -> None:
    """SIGKILL the redis-server `ensure_redis(home)` started and wait until it is gone."""
    pid = int((home / "redis" / "redis.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def assert_running(worker: subprocess.Popen[Any], log: Path) -> None:
    assert worker.poll() is None, f"worker exited ({worker.returncode}):\n{log.read_text()[-4000:]}"


def test_a_worker_outlives_a_redis_killed_with_tasks_in_flight(
    own_redis: tuple[Services, Path], db: psycopg.Connection, double: EndpointDouble, tmp_path: Path
) -> None:
    services, home = own_redis
    double.script([{"model": "small", "match": "", "text": "yes", "first": CONFIDENT, "delay": DELAY_S}])
    path = tmp_path / "herd.yaml"
    path.write_text(herd_yaml({"small": double.model_url("small")}, max_in_flight=4, timeout_s=30))
    # A message Redis took in the second before its kill can be missing from its AOF (fsynced every
    # second): the stale sweep re-sends such a prompt, as it would in production, after 30 s here
    # instead of 15 minutes (a prompt waits in the queue for at most about 25 s in this test).
    herd = Herd(services, path, herd_env(services, path, HERD_PUMP_INTERVAL_S="1", HERD_STALE_AFTER_S="30"))
    log = tmp_path / "worker.log"
    try:
        worker = start_worker(herd.procs, herd.env, "small", log)
        docs = [{"id": i, "text": f"outage {i}"} for i in range(PROMPTS)]
        herd.cli("submit", str(jsonl(tmp_path / "outage.jsonl", docs)), "--job", "outage", "--task", "qa")
        for n, done in enumerate(OUTAGES_AT, start=1):
            deadline = time.monotonic() + 120
            while job_states(db, "outage").get("done", 0) < done and time.monotonic() < deadline:
                assert_running(worker, log)
                time.sleep(0.1)
            # Four calls in flight, the rest of the job waiting in Redis (its AOF, fsynced every second,
            # has had time to keep what the worker has not taken yet).
            kill_redis(home)
            time.sleep(3)  # the worker's reconnect attempts meet a dead Redis for a while
            assert ensure_redis(home) == services.broker_url  # the same port, its data back from the AOF
            deadline = time.monotonic() + 60
            while log.read_text().count("Connection to broker lost") < n and time.monotonic() < deadline:
                assert_running(worker, log)
                time.sleep(0.1)

        deadline = time.monotonic() + 240
        while job_states(db, "outage") != {"done": PROMPTS} and time.monotonic() < deadline:
            assert_running(worker, log)
            time.sleep(0.5)
        text = log.read_text()
        assert job_states(db, "outage") == {"done": PROMPTS}, text[-4000:]
        assert_running(worker, log)
        assert "Unrecoverable error" not in text, text[-4000:]
    finally:
        herd.stop_all()

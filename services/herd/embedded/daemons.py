"""Background processes that outlive the command that started them: pid files, locks, ports.

Shared by the embedded services and the local model herd: both start daemons under HERD_HOME and
must find, reuse and stop them later without ever touching a process that is not theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from herd.errors import ServiceError

TIMEOUT_S = 30.0


class ProcessError(ServiceError, RuntimeError):
    """A background process failed to start or stop; the message names the log to read."""


def wait_until(
    done: Callable[[], bool],
    failed: str,
    log: Path,
    give_up: Callable[[], bool] = bool,
    timeout: float = TIMEOUT_S,
    error: type[ProcessError] = ProcessError,
) -> None:
    """Poll `done` for up to `timeout` s; raise, naming the log, on timeout or once `give_up()`."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline or give_up():
            raise error(f"{failed}; see {log}")
        time.sleep(0.02)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise ensure/stop of one service across processes, so two callers never start two
    servers. flock dies with its holder and is not inherited by the daemons we start
    (subprocess closes other fds), so a crash cannot leave it stuck."""
    with open(path, "a") as f:

        def acquired() -> bool:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        wait_until(acquired, f"timed out waiting for lock {path}", path)
        yield  # closing f releases the lock


def alive(pid: int | None, marker: str) -> bool:
    """pid is a live process whose command line contains `marker` (our data dir or port).

    The marker guards against pid reuse after a crash or reboot: a stale pid may now be anyone's,
    even the system postgres's, which we must never signal. Zombies count as dead, since a
    container's pid 1 may be slow to reap our daemonised children, or never do it."""
    try:
        p = psutil.Process(pid) if pid else None
        return p is not None and p.status() != psutil.STATUS_ZOMBIE and marker in " ".join(p.cmdline())
    except psutil.AccessDenied:  # e.g. /proc mounted hidepid: assume it is ours, never clobber it
        return True
    except psutil.Error:
        return False


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def remembered_port(path: Path) -> int:
    """The remembered port while it is free (stable URLs across restarts), else a new ephemeral
    one (Linux hands out 32768+, never 5432/6379), remembered in turn."""
    for candidate in (read_int(path) or 0, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port: int = s.getsockname()[1]
        path.write_text(f"{port}\n")
        return port
    raise AssertionError("unreachable: port 0 always binds")

"""Background processes that outlive the command that started them: pid files, locks, ports.

Shared by the embedded services and the local model herd: both start daemons under HERD_HOME and
must find, reuse and stop them later without ever touching a process that is not theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
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


# Started by `detach`, in a Python of its own (-I: no working directory or PYTHON* variables on its path):
# start the daemon in a session of its own, print its pid and exit at once, skipping the interpreter's
# teardown, so the daemon is nobody's child here and init (or the container's pid 1) reaps it.
_LAUNCHER = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=int(sys.argv[1]),
                        stderr=subprocess.STDOUT, start_new_session=True)
print(proc.pid, flush=True)
os._exit(0)
"""


def detach(cmd: list[str], log: Path, cwd: Path, env: Mapping[str, str] | None = None) -> int:
    """Start `cmd` in the background, its output appended to `log`, and return its pid.

    The process outlives the caller and is not its child (a double fork through a launcher that exits
    at once and is waited for here), so nothing is left to reap or to warn about in the caller, however
    long it runs. The pid leads a session and process group of its own, for `os.killpg`.
    Raises ProcessError, naming `log`, if the launcher fails (e.g. `cmd[0]` does not exist)."""
    with log.open("ab") as out:
        launcher = subprocess.run(
            [sys.executable, "-I", "-c", _LAUNCHER, str(out.fileno()), *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=out,
            pass_fds=(out.fileno(),),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    pid = launcher.stdout.split()
    if launcher.returncode != 0 or len(pid) != 1 or not pid[0].isdigit():
        raise ProcessError(f"could not start {cmd[0]}; see {log}")
    return int(pid[0])


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

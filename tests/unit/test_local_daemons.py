"""The local herd's background processes (herd/local/localherd.py): a process that is starting is never
taken for one that died, and one that ended is seen to have ended."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from herd.embedded.daemons import wait_until
from herd.local.localherd import Daemon


def test_a_live_process_without_the_marker_has_not_exited(tmp_path: Path) -> None:
    # Between fork and exec a child still carries its parent's command line, without the marker: the
    # state `ensure_worker` and `ensure_server` poll in. Here it lasts, as the marker never appears.
    daemon = Daemon(tmp_path, "workers", "w", marker="a marker this command line lacks")
    pid = daemon.start([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert daemon.pid() is None  # not provably ours, so never signalled by `stop`...
        assert not daemon.exited(pid)  # ...but alive: a start waiting on it goes on waiting
    finally:
        os.kill(pid, signal.SIGKILL)
    # Killed, it is gone or a zombie until reaped: either way it has ended.
    wait_until(lambda: daemon.exited(pid), "the killed process still counts as running", daemon.log)


def test_a_process_that_ended_on_its_own_has_exited(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "servers", "s", marker="--port 1")
    pid = daemon.start([sys.executable, "-c", "raise SystemExit(3)"])
    wait_until(lambda: daemon.exited(pid), "the finished process still counts as running", daemon.log)

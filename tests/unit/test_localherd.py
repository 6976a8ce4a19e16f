"""The local herd's background processes (herd/local/localherd.py): a process that is starting is never
taken for one that died, one that ended is seen to have ended, and none is a child of the command
that started it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from herd.embedded.daemons import ProcessError, wait_until
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


def test_a_daemon_is_nobodys_child_here_and_leads_its_own_session(tmp_path: Path) -> None:
    # Not our child: nothing for this process to reap or wait for, however long either runs; and
    # `stop`'s killpg(pid) reaches its whole group.
    daemon = Daemon(tmp_path, "workers", "w", marker="time.sleep(60)")
    pid = daemon.start([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid not in {child.pid for child in psutil.Process().children(recursive=True)}
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid
        assert daemon.pid_file.read_text() == f"{pid}\n"
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: daemon.exited(pid), "the killed process still counts as running", daemon.log)


def test_a_command_that_cannot_start_is_one_error_naming_the_log(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "servers", "s", marker="--port 1")
    with pytest.raises(ProcessError) as raised:
        daemon.start([str(tmp_path / "no-such-program")])
    assert str(raised.value) == f"could not start {tmp_path / 'no-such-program'}; see {daemon.log}"
    assert "No such file or directory" in daemon.log.read_text()
    assert not daemon.pid_file.exists()

"""Starting and stopping the processes tests and benchmarks run (workers, CLI, doubles), one way.

Each process gets its own session, so a stop takes its whole group down (a worker's pool threads,
a shell's children), and a TERM that is not honoured in time becomes a KILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Procs:
    """Every subprocess started through it; `stop_all()` in a `finally` leaves nothing behind."""

    cwd: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def start(
        self, cmd: list[str], *, env: dict[str, str], log: Path | None = None, stdout: int | None = None
    ) -> subprocess.Popen[Any]:
        """Start `cmd` in `cwd` (ours, never the user's: see herd/local/localherd.py), its output to
        `log` (stdout and stderr) or `stdout`."""
        out: Any = stdout
        if log is not None:
            out = log.open("ab")
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,
        )
        if log is not None:
            out.close()  # the child holds its own descriptor
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"warning: could not stop pid {proc.pid}: {exc}", file=sys.stderr)


def wait_for_log(
    proc: subprocess.Popen[Any], log: Path, needle: str, what: str, *, timeout: float = 60
) -> None:
    """Until `needle` appears in `log`; raises RuntimeError with the log's tail if the process exits
    first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if needle in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready in {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")

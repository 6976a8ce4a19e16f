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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Procs:
    """Every subprocess started through it; `stop_all()` in a `finally` leaves nothing behind."""

    cwd: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def start(
        self,
        cmd: list[str],
        *,
        env: dict[str, str],
        log: Path | None = None,
        stdout: int | None = None,
        errlog: Path | None = None,
    ) -> subprocess.Popen[Any]:
        """Start `cmd` in `cwd` (ours, never the user's: see herd/local/localherd.py), its output to
        `log` (stdout and stderr) or to `stdout` (e.g. subprocess.PIPE) and `errlog` (stderr)."""
        out: Any = log.open("ab") if log is not None else stdout
        err: Any = subprocess.STDOUT if log is not None else None
        if errlog is not None and log is None:
            err = errlog.open("ab")
        try:
            proc = subprocess.Popen(
                cmd, env=env, cwd=self.cwd, stdout=out, stderr=err, start_new_session=True
            )
        finally:
            for opened in (out, err):  # the child holds its own descriptors
                if hasattr(opened, "close"):
                    opened.close()
        self.procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """Stop tracking `proc` (it exited, or was killed on purpose and waited for)."""
        if proc in self.procs:
            self.procs.remove(proc)

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
        self.forget(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # noqa: BLE001 - any failure: report it and keep stopping the others
                print(f"warning: could not stop pid {proc.pid}: {exc}", file=sys.stderr)


def wait_for_log(
    proc: subprocess.Popen[Any],
    log: Path,
    needle: str,
    what: str,
    *,
    timeout: float = 60,
    probe: Callable[[], bool] | None = None,
) -> None:
    """Until `needle` appears in `log`, or `probe()` (asked every half second after the first) says the
    process is ready; raises RuntimeError with the log's tail if the process exits first or `timeout`
    seconds pass."""
    deadline = time.monotonic() + timeout
    next_probe = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if needle in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{text[-3000:]}")
        if probe is not None and time.monotonic() >= next_probe:
            if probe():
                return
            next_probe = time.monotonic() + 0.5
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{what} not ready in {timeout:.0f}s:\n{tail}")


def ready_line(proc: subprocess.Popen[bytes], what: str) -> str:
    """What follows `READY ` on the first line `proc` prints (an endpoint double prints its URL once it
    listens); RuntimeError if it prints something else or exits first."""
    assert proc.stdout is not None, "start it with stdout=subprocess.PIPE"
    line = proc.stdout.readline().decode().strip()  # blocks until the line, or EOF if it died
    if not line.startswith("READY "):
        raise RuntimeError(f"{what} did not start: {line!r}")
    return line.split(" ", 1)[1]

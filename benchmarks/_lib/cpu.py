"""CPU seconds (user + system, psutil) of the processes a benchmark runs and of the whole machine.

On a small machine the figure that carries over is CPU per attempt, not the rate: a busy machine
slows the rate but barely changes the CPU a process spends per message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import redis

from tests.support.harness import Services


def process_cpu(pid: int, *, children: bool = True) -> float:
    """CPU seconds `pid` has used (with its live children: a worker's pool, a postmaster's backends);
    NaN once it is gone."""
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = float(t.user + t.system)
        for child in proc.children(recursive=True) if children else ():
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass  # exited between the listing and the reading
        return total
    except psutil.Error:
        return float("nan")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has been busy since boot (user, system, interrupts)."""
    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "softirq", 0) + getattr(t, "irq", 0))


@dataclass(frozen=True)
class CpuUsage:
    """CPU seconds per named group of processes over `wall_s`, and the machine's busy seconds."""

    seconds: dict[str, float]
    wall_s: float
    machine_busy_s: float
    cores: int

    @property
    def machine_busy(self) -> float:
        """Share of all the machine's cores busy over the interval (from any process)."""
        return self.machine_busy_s / (self.wall_s * self.cores)

    def ms_per(self, name: str, n: int) -> float:
        """Milliseconds of `name`'s CPU per unit of work (attempt, task) over `n` units."""
        return self.seconds[name] * 1000 / n

    def with_seconds(self, name: str, seconds: float) -> CpuUsage:
        """The same usage with one more group measured by other means (e.g. a child's rusage)."""
        return CpuUsage({**self.seconds, name: seconds}, self.wall_s, self.machine_busy_s, self.cores)


class CpuMeter:
    """CPU used by named groups of pids (each with its children) between construction and `stop()`."""

    def __init__(self, groups: Mapping[str, int | Sequence[int]]) -> None:
        self.groups = {name: [p] if isinstance(p, int) else list(p) for name, p in groups.items()}
        self.start = {name: self._read(pids) for name, pids in self.groups.items()}
        self.machine0 = machine_busy_s()
        self.wall0 = time.perf_counter()

    @staticmethod
    def _read(pids: Sequence[int]) -> float:
        return sum(process_cpu(pid) for pid in pids)

    def stop(self) -> CpuUsage:
        wall = time.perf_counter() - self.wall0
        seconds = {name: self._read(pids) - self.start[name] for name, pids in self.groups.items()}
        return CpuUsage(seconds, wall, machine_busy_s() - self.machine0, psutil.cpu_count() or 1)


def server_pids(services: Services) -> dict[str, int]:
    """The Postgres postmaster (its children are every server process) and the Redis server, when both
    run on this machine and are readable (embedded ones always are); {} otherwise."""
    pids: dict[str, int] = {}
    try:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            pids["postgres server"] = psutil.Process(int(conn.info.backend_pid)).ppid()
        client = redis.Redis.from_url(services.broker_url)
        try:
            pids["redis server"] = int(client.info("server")["process_id"])
        finally:
            client.close()
        for pid in pids.values():
            psutil.Process(pid).cpu_times()  # on this machine and readable, or drop them all
    except (psutil.Error, OSError, KeyError):
        return {}
    return pids


@dataclass
class PgBackends:
    """CPU seconds of the Postgres backends serving one database, sampled in a thread: backends come and
    go with connections, so each pid's last reading counts (a backend's CPU since it started, minus its
    reading at `start` if it existed then). Postgres must run on this machine."""

    database_url: str
    interval_s: float = 0.2
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._conn = psycopg.connect(self.database_url, autocommit=True)
        self._me = int(self._conn.info.backend_pid)
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(initial=False)

    def _sample(self, *, initial: bool) -> None:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s", (self._me,)
        ).fetchall()
        for (pid,) in rows:
            cpu = process_cpu(int(pid), children=False)
            if cpu != cpu:  # NaN: gone
                continue
            if initial:
                self.first[int(pid)] = cpu
            self.last[int(pid)] = cpu

    def stop(self) -> float:
        """CPU seconds of this database's backends since `start` (the sampler's own excluded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(initial=False)
        self._conn.close()
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


def load_average() -> float:
    """The one-minute load average: printed beside every rate, since the machine is shared."""
    return os.getloadavg()[0]


def peak_mib(pid: int | str = "self") -> float:
    """A process's peak resident set so far (VmHWM, the kernel's high-water mark) in MiB; "self": this one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")

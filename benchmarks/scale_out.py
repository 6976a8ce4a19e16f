"""Scale-out: 1, 2, 4, 8 Herd worker processes against one Postgres and one Redis, and where it saturates.

    python benchmarks/scale_out.py [--workers 1,2,4,8] [--prompts 5000] [--doubles 2] [--concurrency 8]

Services: HERD_DATABASE_URL / HERD_BROKER_URL when set, else an embedded Postgres / Redis (as
benchmarks/throughput.py, whose helpers this reuses). The ledger tables are truncated and the Redis db
flushed before each step: never point it at data you need.

Each step: `--doubles` endpoint doubles out of process (tests/support/endpoint.py, instant confident
answers; the model lists them all as endpoints, round-robin), `herd submit` of N prompts with no worker
running (the dispatch window's messages wait in Redis: its bytes per queued message are measured here),
then W `herd worker --model small` processes (threads pool, max_in_flight C each). Measured from the
moment every worker is ready to the last attempt, so neither `herd submit` nor worker start-up is in it:

- attempts/s: attempts finished in that interval / its length;
- CPU per attempt (ms) of the workers (sum), the doubles, the Postgres backends serving this database
  (psutil on the pids of pg_stat_activity, sampled every 0.2 s; Postgres must run on this machine),
  the whole Postgres server (all its processes: WAL writer, checkpointer, other databases' backends)
  and the Redis server (likewise shared with other dbs of that server), and how busy the machine was.

After the last step: bytes per attempt row with its indexes (pg_total_relation_size / rows) for the
rows this benchmark wrote, and per prompt (prompts + finals + attempts). docs/scale.md projects these
figures to a 100M-prompt night.

Measured 2026-11-30, `--prompts 4000`, 2 cores shared with two other engineers' runs (attempts/s; CPU
ms per attempt of workers / this db's Postgres backends / doubles / the Redis server; load average):
1 worker 188/s 3.24/1.16/0.50/0.20 (5.2); 2: 200/s 3.63/1.15/0.49/0.16 (7.0); 4: 240/s
3.99/1.21/0.44/0.16 (8.2); 8: 239/s 4.86/1.34/0.44/0.17 (12.0). The machine was 99-100% busy from the
first step: the stack saturates the machine's CPU, workers first. Redis: 9.6 commands per attempt,
1,029 bytes per queued message; attempts 483 bytes per row with indexes. docs/scale.md projects it.

After the Redis transport and urllib3 changes (2026-11-30 18:47 UTC, idle machine, `--workers 1,2,4`):
1 worker 505/s 1.70/0.78/0.27/0.13 (1.5); 2: 598/s 1.84/0.87/0.28/0.11 (2.0); 4: 500/s
2.44/0.99/0.34/0.12 (2.8): one worker does 505 attempts/s and two saturate the two cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/scale_out.py`: sys.path[0] is benchmarks/
    sys.path.insert(0, str(REPO))

from benchmarks.throughput import (  # noqa: E402 - after the path fix above
    MODEL,
    TASK,
    Services,
    fresh_state,
    herd_env,
    herd_yaml,
    services,
    start_double,
    stopping,
    wait_worker_ready,
    write_questions,
)
from tests.support.processes import Procs  # noqa: E402


@dataclass
class PgBackends:
    """CPU seconds of the Postgres backends serving one database, sampled in a thread: backends come and
    go with connections, so each pid's last reading counts (a backend's CPU since it started, minus its
    reading at `start` if it existed then)."""

    database_url: str
    interval_s: float = 0.2
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        import psycopg

        self._conn = psycopg.connect(self.database_url, autocommit=True)
        self._me = int(self._conn.info.backend_pid)
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(initial=False)

    def _sample(self, *, initial: bool) -> None:
        import psutil

        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s", (self._me,)
        ).fetchall()
        for (pid,) in rows:
            try:
                t = psutil.Process(int(pid)).cpu_times()
            except psutil.Error:
                continue
            cpu = float(t.user + t.system)
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


def server_pids(svc: Services) -> dict[str, int]:
    """The Postgres postmaster (its children are every server process) and the Redis server, when they
    run on this machine; {} otherwise."""
    import psutil
    import psycopg
    import redis

    pids: dict[str, int] = {}
    try:
        with psycopg.connect(svc.database_url, autocommit=True) as conn:
            backend = psutil.Process(int(conn.info.backend_pid))
            pids["postgres server"] = backend.ppid()
        client = redis.Redis.from_url(svc.broker_url)
        pids["redis server"] = int(client.info("server")["process_id"])
        client.close()
        for pid in pids.values():
            psutil.Process(pid).cpu_times()  # on this machine and readable, or drop them all
    except (psutil.Error, OSError, KeyError):
        return {}
    return pids


def proc_cpu(pid: int, children: bool) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = float(t.user + t.system)
        if children:
            for child in proc.children(recursive=True):
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    pass
        return total
    except psutil.Error:
        return float("nan")


def queue_bytes(svc: Services) -> tuple[int, int]:
    """(messages in the model's queue, bytes Redis holds for that list: MEMORY USAGE, every element)."""
    import redis

    client = redis.Redis.from_url(svc.broker_url)
    queue = f"herd.{MODEL}"
    n = int(client.llen(queue))
    size = int(client.memory_usage(queue, samples=0) or 0)
    client.close()
    return n, size


def redis_commands(svc: Services) -> tuple[int, float]:
    """(commands processed, microseconds spent executing them) by the whole Redis server so far
    (INFO stats / commandstats: every db of the server, not only ours)."""
    import redis

    client = redis.Redis.from_url(svc.broker_url)
    total = int(client.info("stats")["total_commands_processed"])
    usec = sum(float(v["usec"]) for v in client.info("commandstats").values() if isinstance(v, dict))
    client.close()
    return total, usec


def done_count(conn: Any) -> tuple[int, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE state IN ('done', 'failed')), count(*) FROM prompts"
    ).fetchone()
    return int(row[0]), int(row[1])


def run_step(
    svc: Services, procs: Procs, work: Path, workers: int, n: int, c: int, doubles: int, loglevel: str
) -> dict[str, Any]:
    """One step: W workers draining N submitted prompts; figures over the interval all W were ready."""
    import psutil
    import psycopg
    import redis

    fresh_state(svc)
    started = [start_double(procs, work) for _ in range(doubles)]
    herd_file = work / "herd.yaml"
    herd_file.write_text(herd_yaml([url for _, url in started], c))
    env = herd_env(svc, herd_file)
    questions = work / "questions.jsonl"
    write_questions(questions, n)
    client = redis.Redis.from_url(svc.broker_url)
    redis_before = int(client.info("memory")["used_memory"])
    submit = subprocess.run(
        [sys.executable, "-m", "herd", "submit", str(questions), "--job", f"scale{workers}", "--task", TASK],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if submit.returncode != 0:
        raise RuntimeError(f"herd submit failed ({submit.returncode}):\n{submit.stderr}")
    queued, list_bytes = queue_bytes(svc)
    redis_after = int(client.info("memory")["used_memory"])
    client.close()
    worker_procs = []
    for i in range(workers):
        log = work / f"worker-{workers}-{i}.log"
        worker_procs.append(
            (
                procs.start(
                    [sys.executable, "-m", "herd", "worker", "--model", MODEL, "--loglevel", loglevel],
                    env=env,
                    log=log,
                ),
                log,
            )
        )
    try:
        for proc, log in worker_procs:
            wait_worker_ready(proc, log, f"{MODEL}@%h", svc.broker_url, "herd worker", timeout=120)
        pids = server_pids(svc)
        with psycopg.connect(svc.database_url, autocommit=True) as conn:
            backends = PgBackends(svc.database_url)
            backends.start()
            cpu0 = {
                "workers": sum(proc_cpu(p.pid, True) for p, _ in worker_procs),
                "doubles": sum(proc_cpu(p.pid, True) for p, _ in started),
                **{name: proc_cpu(pid, name.startswith("postgres")) for name, pid in pids.items()},
            }
            machine0 = psutil.cpu_times()
            commands0, usec0 = redis_commands(svc)
            done0, _ = done_count(conn)
            t0 = time.perf_counter()
            deadline = time.monotonic() + max(300, n / 5)
            while True:
                finished, total = done_count(conn)
                if finished == total == n:
                    break
                if time.monotonic() > deadline or any(p.poll() is not None for p, _ in worker_procs):
                    raise RuntimeError(f"{workers} workers: {finished}/{n} prompts finished; see {work}")
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
            cpu1 = {
                "workers": sum(proc_cpu(p.pid, True) for p, _ in worker_procs),
                "doubles": sum(proc_cpu(p.pid, True) for p, _ in started),
                **{name: proc_cpu(pid, name.startswith("postgres")) for name, pid in pids.items()},
            }
            machine1 = psutil.cpu_times()
            commands1, usec1 = redis_commands(svc)
            db_backends = backends.stop()
            connections = len(backends.last)
            errors = conn.execute("SELECT count(*) FROM attempts WHERE status = 'error'").fetchone()
    finally:
        for proc, _ in worker_procs:
            procs.stop(proc)
        for proc, _ in started:
            procs.stop(proc)
    attempts = n - done0  # one attempt per prompt: no escalation, no refinement
    cpu = {name: cpu1[name] - cpu0[name] for name in cpu0}
    cpu["postgres backends (this db)"] = db_backends

    def busy(t: Any) -> float:
        return float(t.user + t.system + getattr(t, "softirq", 0) + getattr(t, "irq", 0))

    return {
        "workers": workers,
        "attempts": attempts,
        "elapsed_s": elapsed,
        "attempts_per_s": attempts / elapsed,
        "cpu_s": cpu,
        "machine_busy": (busy(machine1) - busy(machine0)) / (elapsed * (os.cpu_count() or 1)),
        "errors": int(errors[0]) if errors else 0,
        "connections": connections,
        "redis_commands_per_attempt": (commands1 - commands0) / attempts,
        "redis_command_us_per_attempt": (usec1 - usec0) / attempts,
        "queued": queued,
        "bytes_per_queued_message": list_bytes / queued if queued else float("nan"),
        "redis_delta": (redis_after - redis_before) / queued if queued else float("nan"),
        "load": os.getloadavg()[0],
    }


def ledger_bytes(svc: Services) -> dict[str, float]:
    """Bytes per row, indexes and TOAST included, of the rows the last step left in the ledger."""
    import psycopg

    out: dict[str, float] = {}
    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE attempts, prompts, finals")
        for table in ("attempts", "prompts", "finals"):
            row = conn.execute(
                f"SELECT pg_total_relation_size('{table}'), pg_relation_size('{table}'), "
                f"count(*) FROM {table}".encode()
            ).fetchone()
            assert row is not None
            out[f"{table} rows"] = float(row[2])
            out[f"{table} bytes/row"] = float(row[0]) / max(1, int(row[2]))
            out[f"{table} heap bytes/row"] = float(row[1]) / max(1, int(row[2]))
        row = conn.execute(
            "SELECT avg(length(answer)), avg(length(coalesce(endpoint, ''))) FROM attempts"
        ).fetchone()
        assert row is not None
        out["answer chars"] = float(row[0] or 0)
        out["endpoint chars"] = float(row[1] or 0)
    return out


def print_table(steps: list[dict[str, Any]]) -> None:
    names = [k for k in steps[0]["cpu_s"]]
    print("\n== scale-out, one Postgres + one Redis (CPU per attempt in ms; 'busy' = machine, all cores) ==")
    header = f"{'workers':>7} {'attempts/s':>10} {'speed-up':>8} " + " ".join(f"{n[:18]:>18}" for n in names)
    print(header + f" {'busy':>5} {'load':>5}")
    base = steps[0]["attempts_per_s"]
    for s in steps:
        per = [s["cpu_s"][n] * 1000 / s["attempts"] for n in names]
        print(
            f"{s['workers']:>7} {s['attempts_per_s']:>10.0f} {s['attempts_per_s'] / base:>7.2f}x "
            + " ".join(f"{v:>18.2f}" for v in per)
            + f" {s['machine_busy']:>5.0%} {s['load']:>5.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4,8", help="worker processes per step, comma-separated")
    parser.add_argument("--prompts", type=int, default=5000, help="N prompts per step")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="threads per worker = max_in_flight (8 workers: 40 connections)",
    )
    parser.add_argument("--doubles", type=int, default=2, help="endpoint doubles (processes), all endpoints")
    parser.add_argument("--loglevel", default="info")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="herd-scale-"))
    procs = Procs(cwd=REPO)
    steps: list[dict[str, Any]] = []
    try:
        with services(work / "home") as svc, stopping(procs):
            print(
                f"N={args.prompts} per step, {args.doubles} endpoint doubles, "
                f"max_in_flight {args.concurrency}"
            )
            print(
                f"cores={os.cpu_count()} load average before start={os.getloadavg()[0]:.2f}; work dir {work}"
            )
            for w in counts:
                step = run_step(
                    svc, procs, work, w, args.prompts, args.concurrency, args.doubles, args.loglevel
                )
                steps.append(step)
                per = ", ".join(f"{k} {v * 1000 / step['attempts']:.2f} ms" for k, v in step["cpu_s"].items())
                print(
                    f"  {w} worker(s): {step['attempts']} attempts in {step['elapsed_s']:.1f}s = "
                    f"{step['attempts_per_s']:.0f}/s ({step['errors']} errors); CPU per attempt: {per}; "
                    f"machine {step['machine_busy']:.0%} busy; load {step['load']:.1f}; "
                    f"{step['connections']} Postgres connections seen; Redis (whole server) "
                    f"{step['redis_commands_per_attempt']:.1f} commands, "
                    f"{step['redis_command_us_per_attempt']:.0f} us executing them per attempt"
                )
            sizes = ledger_bytes(svc)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    print_table(steps)
    first = steps[0]
    print(
        f"\nRedis: {first['queued']} queued messages, {first['bytes_per_queued_message']:.0f} bytes each "
        f"(MEMORY USAGE of the list), used_memory grew {first['redis_delta']:.0f} "
        "bytes per message"
    )
    print(
        f"ledger: attempts {sizes['attempts bytes/row']:.0f} bytes/row with indexes "
        f"({sizes['attempts heap bytes/row']:.0f} heap; answers {sizes['answer chars']:.0f} chars), "
        f"prompts {sizes['prompts bytes/row']:.0f}, finals {sizes['finals bytes/row']:.0f} bytes/row"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale-out: 1, 2, 4, 8 Herd worker processes against one Postgres and one Redis, and where it saturates.

    python -m benchmarks.scale_out [--workers 1,2,4,8] [--prompts 5000] [--doubles 2] [--concurrency 4]

Prints figures only; docs/scale.md has the latest and projects them to a 100M-prompt night.

Services: HERD_DATABASE_URL / HERD_BROKER_URL when set, else an embedded Postgres / Redis
(tests/support/harness.py). The ledger is truncated and the Redis db flushed before each step: never
point it at data you need.

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
rows this benchmark wrote, and per prompt (prompts + finals + attempts).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from benchmarks._lib.cpu import CpuMeter, CpuUsage, PgBackends, load_average, server_pids
from benchmarks._lib.entry import run, stack, work_dir
from benchmarks._lib.render import machine_state, table
from benchmarks._lib.workload import MODEL, TASK, finished, wait_finished, write_questions
from tests.support.harness import (
    REPO,
    Services,
    herd_env,
    herd_yaml,
    reset,
    start_double,
    wait_worker_ready,
    worker_command,
)
from tests.support.processes import Procs


@dataclass(frozen=True)
class Step:
    """W workers draining N submitted prompts; figures over the interval all W were ready."""

    workers: int
    attempts: int
    elapsed_s: float
    cpu: CpuUsage  # "workers", "doubles", the servers, "postgres backends (this db)"
    errors: int
    connections: int  # Postgres backends of this database seen during the step
    redis_commands_per_attempt: float  # the whole Redis server
    redis_command_us_per_attempt: float
    queued: int  # messages waiting in Redis after `herd submit`
    bytes_per_queued_message: float  # MEMORY USAGE of the queue's list
    redis_growth_per_message: float  # used_memory's growth per queued message
    load: float

    @property
    def attempts_per_s(self) -> float:
        return self.attempts / self.elapsed_s


@dataclass(frozen=True)
class RowSizes:
    """Bytes per row, indexes and TOAST included (and the heap alone), of the rows a step left."""

    bytes_per_row: dict[str, float]  # attempts, prompts, finals
    heap_bytes_per_row: dict[str, float]
    answer_chars: float
    endpoint_chars: float


def queue_bytes(client: redis.Redis) -> tuple[int, int]:
    """(messages in the model's queue, bytes Redis holds for that list: MEMORY USAGE, every element)."""
    queue = f"herd.{MODEL}"
    return int(client.llen(queue)), int(client.memory_usage(queue, samples=0) or 0)


def redis_commands(client: redis.Redis) -> tuple[int, float]:
    """(commands processed, microseconds spent executing them) by the whole Redis server so far
    (INFO stats / commandstats: every db of the server, not only ours)."""
    total = int(client.info("stats")["total_commands_processed"])
    stats = client.info("commandstats").values()
    return total, sum(float(v["usec"]) for v in stats if isinstance(v, dict))


def run_step(
    svc: Services, procs: Procs, work: Path, workers: int, n: int, c: int, doubles: int, loglevel: str
) -> Step:
    reset(svc)
    started = [start_double(procs) for _ in range(doubles)]
    for double in started:
        double.script({"rules": [], "default": {"text": "ok", "first": [0.99, 0.005]}})
    herd_file = work / "herd.yaml"
    herd_file.write_text(
        herd_yaml({MODEL: [d.model_url(MODEL) for d in started]}, max_in_flight=c, timeout_s=30, retries=3)
    )
    env = herd_env(svc, herd_file)
    questions = work / "questions.jsonl"
    write_questions(questions, n)
    client = redis.Redis.from_url(svc.broker_url)
    redis_before = int(client.info("memory")["used_memory"])
    submit = subprocess.run(
        [sys.executable, "-m", "herd", "submit", str(questions), "--job", f"scale{workers}", "--task", TASK],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if submit.returncode != 0:
        raise RuntimeError(f"herd submit failed ({submit.returncode}):\n{submit.stderr}")
    queued, list_bytes = queue_bytes(client)
    redis_growth = int(client.info("memory")["used_memory"]) - redis_before
    logs = [work / f"worker-{workers}-{i}.log" for i in range(workers)]
    worker_procs = [procs.start(worker_command(MODEL, loglevel), env=env, log=log) for log in logs]
    try:
        for proc, log in zip(worker_procs, logs, strict=True):
            wait_worker_ready(proc, log, MODEL, "herd worker", broker_url=svc.broker_url, timeout=120)
        with psycopg.connect(svc.database_url, autocommit=True) as conn:
            backends = PgBackends(svc.database_url)
            backends.start()
            cpu = CpuMeter(
                {
                    "workers": [p.pid for p in worker_procs],
                    "doubles": [d.proc.pid for d in started],
                    **server_pids(svc),
                }
            )
            commands0, usec0 = redis_commands(client)
            done0, _ = finished(conn)
            wait_finished(
                conn,
                n,
                timeout=max(300, n / 5),
                alive=lambda: all(p.poll() is None for p in worker_procs),
                what=f"{workers} workers (see {work})",
            )
            usage = cpu.stop()
            commands1, usec1 = redis_commands(client)
            usage = usage.with_seconds("postgres backends (this db)", backends.stop())
            errors = conn.execute("SELECT count(*) FROM attempts WHERE status = 'error'").fetchone()
    finally:
        for proc in worker_procs:
            procs.stop(proc)
        for double in started:
            procs.stop(double.proc)
        client.close()
    attempts = n - done0  # one attempt per prompt: no escalation, no refinement
    return Step(
        workers=workers,
        attempts=attempts,
        elapsed_s=usage.wall_s,
        cpu=usage,
        errors=int(errors[0]) if errors else 0,
        connections=len(backends.last),
        redis_commands_per_attempt=(commands1 - commands0) / attempts,
        redis_command_us_per_attempt=(usec1 - usec0) / attempts,
        queued=queued,
        bytes_per_queued_message=list_bytes / queued if queued else float("nan"),
        redis_growth_per_message=redis_growth / queued if queued else float("nan"),
        load=load_average(),
    )


def row_sizes(svc: Services) -> RowSizes:
    """Bytes per row of the rows the last step left in the ledger, after VACUUM ANALYZE."""
    sizes: dict[str, float] = {}
    heap: dict[str, float] = {}
    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE attempts, prompts, finals")
        for name in ("attempts", "prompts", "finals"):
            query = (
                f"SELECT pg_total_relation_size('{name}'), pg_relation_size('{name}'), count(*) FROM {name}"
            )
            row = conn.execute(query.encode()).fetchone()
            assert row is not None  # an aggregate always returns its row
            sizes[name] = float(row[0]) / max(1, int(row[2]))
            heap[name] = float(row[1]) / max(1, int(row[2]))
        row = conn.execute(
            "SELECT avg(length(answer)), avg(length(coalesce(endpoint, ''))) FROM attempts"
        ).fetchone()
        assert row is not None
    return RowSizes(sizes, heap, float(row[0] or 0), float(row[1] or 0))


# ----------------------------------------------------------------------------------------------- render


def step_line(s: Step) -> str:
    per = ", ".join(f"{name} {s.cpu.ms_per(name, s.attempts):.2f} ms" for name in s.cpu.seconds)
    return (
        f"  {s.workers} worker(s): {s.attempts} attempts in {s.elapsed_s:.1f}s = {s.attempts_per_s:.0f}/s "
        f"({s.errors} errors); CPU per attempt: {per}; machine {s.cpu.machine_busy:.0%} busy; "
        f"load {s.load:.1f}; {s.connections} Postgres connections seen; Redis (whole server) "
        f"{s.redis_commands_per_attempt:.1f} commands, {s.redis_command_us_per_attempt:.0f} us executing "
        "them per attempt"
    )


def steps_table(steps: list[Step]) -> str:
    names = list(steps[0].cpu.seconds)
    base = steps[0].attempts_per_s
    rows = [
        [
            s.workers,
            f"{s.attempts_per_s:.0f}",
            f"{s.attempts_per_s / base:.2f}x",
            *(f"{s.cpu.ms_per(name, s.attempts):.2f}" for name in names),
            f"{s.cpu.machine_busy:.0%}",
            f"{s.load:.1f}",
        ]
        for s in steps
    ]
    return table(["workers", "attempts/s", "speed-up", *(n[:18] for n in names), "busy", "load"], rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_out", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--workers", default="1,2,4,8", help="worker processes per step, comma-separated")
    p.add_argument("--prompts", type=int, default=5000, help="N prompts per step")
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="threads per worker = max_in_flight (8 workers: 40 connections)",
    )
    p.add_argument("--doubles", type=int, default=2, help="endpoint doubles (processes), all endpoints")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, files)")
    return p


def measure(
    args: argparse.Namespace, work: Path, on_step: Callable[[Step], None]
) -> tuple[list[Step], RowSizes]:
    """Every step of --workers, in order (`on_step` sees each as it ends), then the ledger's row sizes."""
    steps = []
    with stack(work) as (svc, procs):
        for w in [int(x) for x in args.workers.split(",")]:
            steps.append(
                run_step(svc, procs, work, w, args.prompts, args.concurrency, args.doubles, args.loglevel)
            )
            on_step(steps[-1])
        return steps, row_sizes(svc)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with work_dir("herd-scale-", keep=args.keep) as work:
        print(f"N={args.prompts} per step, {args.doubles} endpoint doubles, max_in_flight {args.concurrency}")
        print(f"{machine_state()}; work dir {work}")
        steps, sizes = measure(args, work, lambda step: print(step_line(step), flush=True))
    print("\n== scale-out, one Postgres + one Redis (CPU per attempt in ms; 'busy' = machine, all cores) ==")
    print(steps_table(steps))
    first = steps[0]
    print(
        f"\nRedis: {first.queued} queued messages, {first.bytes_per_queued_message:.0f} bytes each "
        f"(MEMORY USAGE of the list), used_memory grew {first.redis_growth_per_message:.0f} bytes per message"
    )
    print(
        f"ledger: attempts {sizes.bytes_per_row['attempts']:.0f} bytes/row with indexes "
        f"({sizes.heap_bytes_per_row['attempts']:.0f} heap; answers {sizes.answer_chars:.0f} chars), "
        f"prompts {sizes.bytes_per_row['prompts']:.0f}, finals {sizes.bytes_per_row['finals']:.0f} bytes/row"
    )
    print(f"load average after: {load_average():.2f}")
    return 0


if __name__ == "__main__":
    run(main)

"""Bare Celery, the baseline of benchmarks/throughput.py: the no-op task of bare_celery.py (here)
on a worker with Herd's worker flags, N tasks sent in one producer loop; tasks/s from the first publish
to the N-th Redis INCR (how it knows N tasks are done without a result backend)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks._lib import bare_celery
from benchmarks._lib.cpu import CpuMeter, CpuUsage, server_pids
from tests.support.harness import Services, herd_env, reset, wait_worker_ready
from tests.support.processes import Procs


@dataclass(frozen=True)
class BareRun:
    tasks: int
    elapsed_s: float  # first publish to the last task's INCR
    publish_s: float  # of which the producer loop
    cpu: CpuUsage  # "worker", the servers

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.elapsed_s

    @property
    def worker_ms(self) -> float:
        """Worker CPU per task, ms."""
        return self.cpu.ms_per("worker", self.tasks)


def run_bare(
    services: Services,
    procs: Procs,
    work: Path,
    n: int,
    concurrency: int,
    *,
    loglevel: str,
    events: bool,
    herd_transport: bool = False,
) -> BareRun:
    """`n` no-op tasks through a bare Celery worker (`--pool threads --concurrency C
    --prefetch-multiplier 1`, acks_late). `events`: Herd's task-event settings on both sides;
    `herd_transport`: Herd's Redis transport (herd/broker_transport.py) under the app too."""
    reset(services)
    env = herd_env(
        services,
        None,
        BENCH_BROKER_URL=services.broker_url,
        BENCH_BARE_EVENTS="1" if events else "0",
        BENCH_BARE_TRANSPORT="herd" if herd_transport else "kombu",
    )
    log = work / f"bare-worker{'-events' if events else ''}{'-herd-transport' if herd_transport else ''}.log"
    cmd = [sys.executable, "-m", "celery", "-A", "benchmarks._lib.bare_celery", "worker"]
    cmd += ["--queues", bare_celery.QUEUE, "--hostname", "bare@%h", "--pool", "threads"]
    cmd += ["--concurrency", str(concurrency), "--prefetch-multiplier", "1"]
    cmd += ["--without-gossip", "--without-mingle", "--loglevel", loglevel]
    if events:
        cmd.append("--task-events")
    proc = procs.start(cmd, env=env, log=log)
    try:
        wait_worker_ready(proc, log, "bare", "bare celery worker", broker_url=services.broker_url)
        app = bare_celery.app
        app.conf.broker_url = services.broker_url
        app.conf.task_send_sent_event = events  # the producer side of Herd's event settings
        counter = redis.Redis.from_url(services.broker_url)
        cpu = CpuMeter({"worker": proc.pid, **server_pids(services)})
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                # Herd's message shape: (prompt id, model, stage, round).
                args = (i, "bare", "answer", 0)
                app.send_task(bare_celery.TASK, args=args, queue=bare_celery.QUEUE, producer=producer)
        publish_s = time.perf_counter() - t0
        deadline = time.monotonic() + max(120, n / 20)
        while (done := int(counter.get(bare_celery.COUNTER) or 0)) < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"bare celery: only {done}/{n} done; see {log}")
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
        usage = cpu.stop()
        counter.close()
    finally:
        procs.stop(proc)
    return BareRun(n, elapsed, publish_s, usage)

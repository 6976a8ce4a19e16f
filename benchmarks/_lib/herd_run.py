"""One Herd run of benchmarks/throughput.py: the endpoint double out of process (instant confident
answers), a one-model herd file (openai chat, max_in_flight C, no escalation, task `qa`), one
`herd worker`, `herd submit` of N prompts; attempts/s over the span of the attempts in the ledger."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks._lib import baseline, profile
from benchmarks._lib.cpu import CpuMeter, CpuUsage, server_pids
from benchmarks._lib.workload import MODEL, TASK, wait_finished, write_questions
from tests.support.harness import REPO, Services, herd_env, herd_yaml, reset, start_double, start_worker
from tests.support.processes import Procs

INSTANT = {"rules": [], "default": {"text": "ok", "first": [0.99, 0.005]}}  # confident: no escalation


@dataclass(frozen=True)
class AttemptStats:
    """What the ledger says about a run's attempts."""

    attempts: int
    errors: int
    first_error: str | None
    span_s: float  # first attempts.started_at to last attempts.finished_at
    first_started: float  # epoch seconds
    last_finished: float
    latency_ms: tuple[float, float, float]  # endpoint latency seen by the worker: mean, p50, p99
    states: dict[str, int]  # prompts per state
    timeline: list[int]  # attempts finished in each second since the first start

    @classmethod
    def read(cls, conn: psycopg.Connection) -> AttemptStats:
        row = conn.execute(
            """SELECT count(*), count(*) FILTER (WHERE status = 'error'),
                      extract(epoch FROM max(finished_at) - min(started_at)),
                      extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),
                      avg(latency_s), percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s),
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_s)
               FROM attempts"""
        ).fetchone()
        assert row is not None  # an aggregate always returns its row
        per_second = conn.execute(
            """SELECT floor(extract(epoch FROM finished_at - (SELECT min(started_at) FROM attempts))),
                      count(*)
               FROM attempts GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        states = conn.execute("SELECT state, count(*) FROM prompts GROUP BY state").fetchall()
        error = conn.execute("SELECT error FROM attempts WHERE status = 'error' LIMIT 1").fetchone()
        return cls(
            attempts=int(row[0]),
            errors=int(row[1]),
            first_error=error[0] if error else None,
            span_s=float(row[2]),
            first_started=float(row[3]),
            last_finished=float(row[4]),
            latency_ms=(float(row[5]) * 1000, float(row[6]) * 1000, float(row[7]) * 1000),
            states={str(state): int(count) for state, count in states},
            timeline=[int(count) for _, count in per_second],
        )


@dataclass(frozen=True)
class HerdRun:
    prompts: int
    ledger: AttemptStats
    wall_s: float  # start of `herd submit` to the last attempt
    first_attempt_after_s: float  # after the start of `herd submit`
    submit_cli_s: float
    double_calls: int
    cpu: CpuUsage  # "worker", "double", the servers, "submit cli"
    profile: profile.Profile | None = None

    @property
    def attempts_per_s(self) -> float:
        return self.ledger.attempts / self.ledger.span_s

    @property
    def worker_ms(self) -> float:
        """Worker CPU per prompt (one attempt each), ms."""
        return self.cpu.ms_per("worker", self.prompts)


def run_herd(
    services: Services,
    procs: Procs,
    work: Path,
    n: int,
    concurrency: int,
    *,
    window: int,
    loglevel: str,
    events: bool = False,
    src: Path | None = None,
    profile_dir: Path | None = None,
) -> HerdRun:
    """`src`: another checkout whose Herd the worker and `herd submit` import instead of this one's
    (a baseline in the same run, benchmarks/_lib/baseline.py). `profile_dir`: py-spy the worker into
    `<profile_dir>/herd-worker.txt` (skipped without py-spy: the result's profile is None)."""
    reset(services)
    double = start_double(procs)
    double.script(INSTANT)
    herd_file = work / "herd.yaml"
    herd_file.write_text(
        herd_yaml({MODEL: double.model_url(MODEL)}, max_in_flight=concurrency, timeout_s=30, retries=3)
    )
    env = herd_env(services, herd_file, HERD_DISPATCH_WINDOW=str(window), HERD_TASK_EVENTS=str(int(events)))
    if src is not None:
        env = baseline.env_for(env, src)
    questions = work / "questions.jsonl"
    write_questions(questions, n)
    log = work / f"herd-worker{'-events' if events else ''}{'-baseline' if src else ''}.log"
    worker = start_worker(procs, env, MODEL, log, loglevel=loglevel, broker_url=services.broker_url)
    spy = None
    try:
        if profile_dir is not None:
            spy = profile.start_py_spy(
                procs, worker.pid, profile_dir / "herd-worker.txt", work / "py-spy.log"
            )
        cpu = CpuMeter({"worker": worker.pid, "double": double.proc.pid, **server_pids(services)})
        t0_epoch, t0 = time.time(), time.perf_counter()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        submit = subprocess.run(
            [sys.executable, "-m", "herd", "submit", str(questions), "--job", "bench", "--task", TASK],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        submit_s = time.perf_counter() - t0
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        submit_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
        if submit.returncode != 0:
            raise RuntimeError(f"herd submit failed ({submit.returncode}):\n{submit.stderr}")
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            what = f"herd (see {log})"
            wait_finished(conn, n, timeout=max(180, n / 10), alive=lambda: worker.poll() is None, what=what)
            usage = cpu.stop().with_seconds("submit cli", submit_cpu)
            stats = AttemptStats.read(conn)
    finally:
        if spy is not None:
            procs.stop(spy, sig=signal.SIGINT)  # py-spy writes its output on SIGINT
        procs.stop(worker)
    calls = double.total_calls()
    procs.stop(double.proc)
    return HerdRun(
        prompts=n,
        ledger=stats,
        wall_s=stats.last_finished - t0_epoch,
        first_attempt_after_s=stats.first_started - t0_epoch,
        submit_cli_s=submit_s,
        double_calls=calls,
        cpu=usage,
        profile=profile.summarize(profile_dir / "herd-worker.txt")
        if spy is not None and profile_dir
        else None,
    )

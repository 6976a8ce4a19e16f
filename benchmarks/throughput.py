"""Throughput of Herd's pipeline against bare Celery on the same broker, and of `herd submit`.

    python benchmarks/throughput.py [--prompts N] [--submit-records M] [--concurrency C] [--bare-events]
        [--repeat R] [--baseline-src DIR] [--profile DIR] [--skip bare|herd|submit]

Prints figures only (no asserts on speed):

1. Services: HERD_DATABASE_URL / HERD_BROKER_URL when set, else an embedded Postgres / Redis under a
   temporary HERD_HOME, stopped at the end. Tables `finals, attempts, prompts, jobs` are truncated and
   the Redis db flushed before each part: never point it at a database or Redis whose data you need.
2. Bare Celery: benchmarks/bare_celery.py, a no-op task that does one Redis INCR (that is how the
   benchmark knows N tasks are done without a result backend), worker as a subprocess with Herd's
   worker flags (`--pool threads --concurrency C --prefetch-multiplier 1`, acks_late); N tasks sent in
   one producer loop; tasks/s from the first publish to the N-th INCR.
3. Herd: the endpoint double out of process (instant confident answers), a one-model herd.yaml (openai,
   chat, max_in_flight C, no escalation, task `qa`), one `herd worker`, `herd submit` of N prompts;
   attempts/s = N / (last attempts.finished_at - first attempts.started_at), plus wall clock from the
   start of `herd submit` to the last attempt. Task events off, Herd's default (HERD_TASK_EVENTS=0).
   With --bare-events, parts 2 and 3 run again with Herd's task events on both sides (`--task-events`
   and sent events; HERD_TASK_EVENTS=1). --repeat R alternates the runs R times. --baseline-src DIR
   adds, after each Herd run, the same run with another checkout's Herd (e.g. `git archive main`).
4. Ratios: Herd against the bare run with the same event settings, from this run (medians over R):
   attempts/s over tasks/s, and worker CPU per attempt beside worker CPU per task.
5. Submit: `herd.jobs.submit.submit()` in a child process (as the CLI calls it, records from
   `documents.read`) on 10k and M JSONL records (~200 characters of text each), window 1000, no worker;
   prompts/s and the child's peak RSS during submit() (psutil, sampled every 10ms) for both sizes.
6. One summary line.

CPU seconds of every process involved (worker, endpoint double, embedded Postgres and Redis, the submit
CLI) are printed with each part: on a small machine the worker process (one GIL) is the bottleneck.
--profile DIR runs `py-spy record --gil` on the Herd worker during the first Herd run and prints where
its Python time goes, by category (SQL, HTTP, events, publish, Celery receive/ack...). All subprocesses
run in their own sessions and are stopped on exit, Ctrl-C included.

--bare-herd-transport adds, after each bare run, the same bare Celery on Herd's Redis transport
(herd/broker_transport.py), which also makes Celery's own receive and ack cheaper: against it, the
ratio is Herd's own work per attempt.

Measured 2026-11-30 18:12-18:17 UTC, `--prompts 4000 --bare-events --bare-herd-transport --skip submit
--repeat 3 --baseline-src <5fc385b>`, idle 2-core machine (load 0.7 -> 2.5), medians (ms = worker CPU
per task or attempt): bare Celery 788 tasks/s (1.19 ms), with events 575/s (1.57 ms); on Herd's
transport 937/s (0.99 ms) and 699/s (1.25 ms); Herd without events 5fc385b 330 attempts/s (2.91 ms) ->
this version 460/s (2.10 ms): 0.42x -> 0.58x bare (0.49x bare on Herd's transport); with events 273/s
(3.40 ms) -> 367/s (2.61 ms): 0.47x -> 0.64x (0.53x). The ratio moves with the load; the CPU per
attempt is the steadier figure.
docs/scale.md has what changed and what the profile says is left.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/throughput.py`: sys.path[0] is benchmarks/
    sys.path.insert(0, str(REPO))

from tests.support.processes import Procs  # noqa: E402 - after the path fix above

TABLES = "finals, attempts, prompts, jobs"
MODEL = "small"
TASK = "qa"
SUBMIT_WINDOW = 1000
FILLER = (
    "Herd runs a herd of open language models as one system for bulk work: small models answer first, "
    "uncertain answers climb to larger ones, and every attempt lands in the Postgres ledger. "
)


# ---------------------------------------------------------------------------------------------- processes


def wait_worker_ready(
    proc: subprocess.Popen[Any], log: Path, hostname: str, broker_url: str, what: str, timeout: float = 60
) -> None:
    """Until the worker logs ` ready.` (loglevel info) or answers a control ping (any loglevel)."""
    from benchmarks import bare_celery  # any app on the same broker reaches every worker's pidbox

    bare_celery.app.conf.broker_url = broker_url
    name = hostname.replace("%h", socket.gethostname())
    deadline = time.monotonic() + timeout
    next_ping = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if " ready." in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{text[-3000:]}")
        if time.monotonic() >= next_ping:
            if bare_celery.app.control.ping(destination=[name], timeout=0.5):
                return
            next_ping = time.monotonic() + 0.5
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready in {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def service_pids(svc: Services) -> dict[str, int]:
    """Embedded Postgres (postmaster; its backends are children) and Redis, to count their CPU too."""
    if not svc.embedded:
        return {}
    try:
        from herd.local.embedded import status

        return {info.name: info.pid for info in status(svc.home) if info.pid}
    except Exception:  # noqa: BLE001 - CPU figures are a bonus
        return {}


class CpuMeter:
    """CPU seconds used by given pids (and their children) and by the whole machine, between two points."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._psutil = psutil
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = {name: self._cpu(p) for name, p in self.procs.items()}
        self.machine0 = psutil.cpu_times()
        self.wall0 = time.perf_counter()

    def _cpu(self, proc: Any) -> float:
        try:
            t = proc.cpu_times()
            total = t.user + t.system
            for child in proc.children(recursive=True):
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except self._psutil.Error:
                    pass
            return total
        except self._psutil.Error:
            return float("nan")

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall0
        out = {name: self._cpu(p) - self.start[name] for name, p in self.procs.items()}
        m0, m1 = self.machine0, self._psutil.cpu_times()
        busy = lambda t: t.user + t.system + getattr(t, "softirq", 0) + getattr(t, "irq", 0)  # noqa: E731
        out["machine busy"] = busy(m1) - busy(m0)
        out["wall"] = wall
        out["cores"] = float(self._psutil.cpu_count() or 1)
        return out


def cpu_line(cpu: dict[str, float]) -> str:
    wall, cores = cpu["wall"], cpu["cores"]
    parts = [
        f"{name} {sec:.1f}s ({sec / wall:.0%} of a core)"
        for name, sec in cpu.items()
        if name not in ("wall", "cores", "machine busy")
    ]
    parts.append(f"machine {cpu['machine busy'] / (wall * cores):.0%} busy of {cores:.0f} cores")
    return f"  cpu over {wall:.1f}s: " + ", ".join(parts)


# ----------------------------------------------------------------------------------------------- services


@dataclass
class Services:
    database_url: str
    broker_url: str
    home: Path
    embedded: bool


@contextmanager
def services(home: Path) -> Iterator[Services]:
    from herd.ledger.db import migrate

    db_url = os.environ.get("HERD_DATABASE_URL")
    broker = os.environ.get("HERD_BROKER_URL")
    embedded = not (db_url and broker)
    try:
        if embedded:
            from herd.local.embedded import ensure_postgres, ensure_redis

            t0 = time.perf_counter()
            db_url = db_url or ensure_postgres(home)
            broker = broker or ensure_redis(home)
            print(f"embedded services started under {home} in {time.perf_counter() - t0:.1f}s")
        assert db_url and broker
        migrate(db_url)
        yield Services(db_url, broker, home, embedded)
    finally:
        if embedded:
            from herd.local.embedded import stop_all

            stop_all(home)


@contextmanager
def stopping(procs: Procs) -> Iterator[None]:
    """Stop our subprocesses before the services they talk to go away."""
    try:
        yield
    finally:
        procs.stop_all()


def fresh_state(svc: Services) -> None:
    import psycopg
    import redis

    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    client = redis.Redis.from_url(svc.broker_url)
    client.flushdb()
    client.close()


def herd_env(svc: Services, herd_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERD_", "BENCH_"))}
    env.update(
        {
            "HERD_DATABASE_URL": svc.database_url,
            "HERD_BROKER_URL": svc.broker_url,
            "HERD_HOME": str(svc.home),
            "HERD_HERD_FILE": str(herd_file),
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            **extra,
        }
    )
    return env


# ---------------------------------------------------------------------------------------------- bare celery


def run_bare(
    svc: Services, procs: Procs, work: Path, n: int, c: int, loglevel: str, events: bool,
    herd_transport: bool = False,
) -> dict[str, Any]:  # fmt: skip
    import redis

    from benchmarks import bare_celery

    fresh_state(svc)
    env = herd_env(
        svc,
        work / "unused.yaml",
        BENCH_BROKER_URL=svc.broker_url,
        BENCH_BARE_EVENTS="1" if events else "0",
        BENCH_BARE_TRANSPORT="herd" if herd_transport else "kombu",
    )
    log = work / f"bare-worker{'-events' if events else ''}{'-herd-transport' if herd_transport else ''}.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "benchmarks.bare_celery",
        "worker",
        "--queues",
        bare_celery.QUEUE,
        "--hostname",
        "bare@%h",
        "--pool",
        "threads",
        "--concurrency",
        str(c),
        "--prefetch-multiplier",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        loglevel,
    ]
    if events:
        cmd.append("--task-events")
    proc = procs.start(cmd, env=env, log=log)
    try:
        wait_worker_ready(proc, log, "bare@%h", svc.broker_url, "bare celery worker")
        app = bare_celery.app
        app.conf.broker_url = svc.broker_url
        app.conf.task_send_sent_event = events  # the producer side of Herd's event settings
        counter = redis.Redis.from_url(svc.broker_url)
        cpu = CpuMeter({"worker": proc.pid, **service_pids(svc)})
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                app.send_task(
                    # Herd's message shape: (prompt id, model, stage, round).
                    bare_celery.TASK,
                    args=(i, "bare", "answer", 0),
                    queue=bare_celery.QUEUE,
                    producer=producer,
                )
        t_pub = time.perf_counter() - t0
        deadline = time.monotonic() + max(120, n / 20)
        while int(counter.get(bare_celery.COUNTER) or 0) < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(
                    f"bare celery: only {int(counter.get(bare_celery.COUNTER) or 0)}/{n} done; see {log}"
                )
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
        usage = cpu.stop()
        counter.close()
    finally:
        procs.stop(proc)
    return {"tasks_per_s": n / elapsed, "elapsed_s": elapsed, "publish_s": t_pub, "cpu": usage}


# ------------------------------------------------------------------------------------------------------ herd


def herd_yaml(base_url: str | list[str], c: int) -> str:
    """A one-model herd file (openai chat, no escalation) with every double in `base_url` as an endpoint."""
    urls = [base_url] if isinstance(base_url, str) else base_url
    endpoints = ", ".join(f"{url}/m/{MODEL}/v1" for url in urls)
    return f"""\
models:
  {MODEL}:
    protocol: openai
    endpoints: [{endpoints}]
    prompt_mode: chat
    max_in_flight: {c}
    timeout_s: 30
    retries: {{max: 3, backoff_s: 0.05, backoff_max_s: 0.2}}
    gpus: {{type: L4, count: 1, usd_per_hour: 0.8}}
tasks:
  {TASK}:
    kind: qa
"""


def start_double(procs: Procs, work: Path) -> tuple[subprocess.Popen[Any], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = procs.start(
        [sys.executable, "-m", "tests.support.endpoint", "--port", "0"], env=env, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()  # blocks until READY (or EOF if it died)
    if not line.startswith("READY "):
        raise RuntimeError(f"endpoint double did not start: {line!r}")
    url = line.split(" ", 1)[1]
    script = {"rules": [], "default": {"text": "ok", "first": [0.99, 0.005]}}
    request = urllib.request.Request(
        f"{url}/_script",
        data=json.dumps(script).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    return proc, url


def double_calls(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_calls", timeout=30) as response:
        return int(json.load(response)["total"])


def write_questions(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": i, "text": f"What is the capital of country number {i}?"}) + "\n")


def run_herd(
    svc: Services, procs: Procs, work: Path, n: int, c: int, window: int, loglevel: str, profile: Path | None,
    events: bool = False, src: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One Herd run (see the module docstring). `src`: another checkout of Herd whose services/ and
    workers/ the worker and `herd submit` import instead of this one's (a baseline in the same run)."""
    import psycopg

    fresh_state(svc)
    double, url = start_double(procs, work)
    herd_file = work / "herd.yaml"
    herd_file.write_text(herd_yaml(url, c))
    env = herd_env(svc, herd_file, HERD_DISPATCH_WINDOW=str(window), HERD_TASK_EVENTS="1" if events else "0")
    if src is not None:  # before the editable install's path entries, which come from site-packages
        paths = [str(src / d) for d in ("services", "workers", "migrations")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env["PYTHONPATH"]])
    questions = work / "questions.jsonl"
    write_questions(questions, n)
    log = work / f"herd-worker{'-events' if events else ''}{'-baseline' if src else ''}.log"
    worker = procs.start(
        [sys.executable, "-m", "herd", "worker", "--model", MODEL, "--loglevel", loglevel],
        env=env,
        log=log,
    )
    spy = None
    try:
        wait_worker_ready(worker, log, f"{MODEL}@%h", svc.broker_url, "herd worker")
        if profile is not None:
            spy = start_py_spy(procs, worker.pid, profile, work)
        cpu = CpuMeter({"worker": worker.pid, "double": double.pid, **service_pids(svc)})
        t0_epoch = time.time()
        t0 = time.perf_counter()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        submit = subprocess.run(
            [
                sys.executable,
                "-m",
                "herd",
                "submit",
                str(questions),
                "--job",
                "bench",
                "--task",
                TASK,
            ],
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
        deadline = time.monotonic() + max(180, n / 10)
        with psycopg.connect(svc.database_url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE state IN ('done', 'failed')), count(*) FROM prompts"
                ).fetchone()
                assert row is not None
                finished, total = int(row[0]), int(row[1])
                if total == n and finished == n:
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"herd: {finished}/{n} prompts finished; see {log}")
                time.sleep(0.05)
            detect_s = time.perf_counter() - t0
            usage = cpu.stop()
            usage["submit cli"] = submit_cpu
            per_second = conn.execute(
                """SELECT floor(extract(epoch FROM finished_at - (SELECT min(started_at) FROM attempts))),
                          count(*)
                   FROM attempts GROUP BY 1 ORDER BY 1"""
            ).fetchall()
            timeline = [int(row[1]) for row in per_second]
            stats = conn.execute(
                """SELECT count(*), count(*) FILTER (WHERE status = 'error'),
                          extract(epoch FROM max(finished_at) - min(started_at)),
                          extract(epoch FROM max(finished_at)), extract(epoch FROM min(started_at)),
                          avg(latency_s), percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s),
                          percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_s)
                   FROM attempts"""
            ).fetchone()
            states: dict[str, int] = dict(
                conn.execute("SELECT state, count(*) FROM prompts GROUP BY state").fetchall()
            )
            error = conn.execute("SELECT error FROM attempts WHERE status = 'error' LIMIT 1").fetchone()
    finally:
        if spy is not None:
            procs.stop(spy, sig=signal.SIGINT)  # py-spy writes its output on SIGINT
        procs.stop(worker)
    calls = double_calls(url)
    procs.stop(double)
    assert stats is not None
    attempts, errors, span, last_epoch, first_epoch = (
        int(stats[0]),
        int(stats[1]),
        float(stats[2]),
        float(stats[3]),
        float(stats[4]),
    )
    return {
        "attempts_per_s": attempts / span,
        "attempts": attempts,
        "errors": errors,
        "first_error": error[0] if error else None,
        "span_s": span,
        "wall_s": last_epoch - t0_epoch,
        "first_attempt_after_s": first_epoch - t0_epoch,
        "submit_cli_s": submit_s,
        "detect_s": detect_s,
        "states": {k: int(v) for k, v in states.items()},
        "double_calls": calls,
        "latency_mean_ms": float(stats[5]) * 1000,
        "latency_p50_ms": float(stats[6]) * 1000,
        "latency_p99_ms": float(stats[7]) * 1000,
        "cpu": usage,
        "timeline": timeline,
        "submit_stdout": submit.stderr.strip().splitlines()[-1] if submit.stderr.strip() else "",
    }


def start_py_spy(procs: Procs, pid: int, out_dir: Path, work: Path) -> subprocess.Popen[Any] | None:
    exe = shutil.which("py-spy")
    if exe is None:
        print("warning: --profile needs py-spy (pip install py-spy); not profiling", file=sys.stderr)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "herd-worker.txt"
    # --gil: only the thread holding the GIL, i.e. where the worker's one core of Python goes.
    proc = procs.start(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "250",
            "--nonblocking",
            "--gil",
            "--output",
            str(out),
        ],
        env=dict(os.environ),
        log=work / "py-spy.log",
    )
    time.sleep(1.0)  # attach before the first message
    return proc


# Where the worker's GIL time goes: the first category (in this order) whose marker is in a sample's stack.
PROFILE_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("herd publish (refill messages)", ("publish (herd/queues.py",)),
    ("celery task events", ("celery/events/dispatcher.py",)),
    ("inference HTTP call + parsing", ("Backend.generate (herd/backends/",)),
    ("SQL (ledger, psycopg, pool)", ("herd/ledger/steps.py", "psycopg", "WorkerContext.connection")),
    ("pipeline, other Python", ("Pipeline.run (herd/cascade/pipeline.py",)),
    ("herd pump thread", ("Pump.",)),
    ("logging", ("logging/__init__.py",)),
    ("celery ack (acks_late bookkeeping)", ("Message.ack (kombu/", "QoS.ack (kombu/")),
    ("celery receive + unacked bookkeeping", ("Transport._deliver (kombu/", "Channel._brpop_read (kombu/")),
    ("celery task tracing", ("trace_task (celery/app/trace.py",)),
    ("celery event loop, other", ("asynloop (celery/worker/loops.py",)),
)


def summarize_profile(path: Path, top: int = 12) -> None:
    """py-spy's raw (collapsed) samples of the GIL holder, by PROFILE_CATEGORIES, and the hottest leaves."""
    if not path.exists():
        print(f"  (no profile at {path})")
        return
    categories: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaves[stack.rsplit(";", 1)[-1]] += n
        name = next(
            (name for name, markers in PROFILE_CATEGORIES if any(m in stack for m in markers)), "other"
        )
        categories[name] += n
    if not total:
        print(f"  py-spy: no samples in {path}")
        return
    print(f"  py-spy (GIL holder only): {total} samples, raw stacks in {path}")
    for name, n in categories.most_common():
        print(f"    {n / total:6.1%}  {name}")
    print("  hottest leaf frames:")
    for frame, n in leaves.most_common(top):
        print(f"    {n / total:6.1%}  {frame}")


# ---------------------------------------------------------------------------------------------------- submit


def write_records(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            head = f"Document {i}. "
            text = head + FILLER[: 200 - len(head)]
            out.write(json.dumps({"id": i, "text": text}) + "\n")


def submit_child(path: str, job: str) -> None:
    """Runs in its own process: submit() as the CLI calls it, then report timings and peak RSS as JSON."""
    import psutil
    import psycopg

    from herd.herdfile.model import load_herd
    from herd.jobs import documents
    from herd.jobs.submit import submit
    from herd.queues import publish
    from herd.settings import get_settings
    from herd.urls import database_url

    settings = get_settings()
    herd = load_herd(settings.herd_file)
    files = documents.expand([path])
    me = psutil.Process()
    rss_start = me.memory_info().rss
    sampled = [rss_start]
    done = threading.Event()

    def sample() -> None:  # ru_maxrss survives fork+exec and import-time peaks; this sees submit() alone
        while not done.wait(0.01):
            sampled.append(me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with psycopg.connect(database_url(settings)) as conn:
        result = submit(
            conn, herd, job=job, task=TASK, records=documents.read(files), window=settings.dispatch_window
        )
    t1 = time.perf_counter()
    done.set()
    sampler.join()
    sent = publish(result.dispatched)
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "read": result.read,
                "added": result.added,
                "dispatched": sent,
                "submit_s": t1 - t0,
                "publish_s": t2 - t1,
                "rss_start_kb": rss_start // 1024,
                "rss_submit_max_kb": max(sampled) // 1024,
                "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


def run_submit(svc: Services, work: Path, sizes: list[int]) -> list[dict[str, Any]]:
    import redis

    herd_file = work / "herd.yaml"
    if not herd_file.exists():
        herd_file.write_text(herd_yaml("http://127.0.0.1:9", 8))  # submit never calls the endpoint
    env = herd_env(svc, herd_file, HERD_DISPATCH_WINDOW=str(SUBMIT_WINDOW))
    results = []
    big = work / f"records-{max(sizes)}.jsonl"
    write_records(big, max(sizes))
    for size in sizes:
        path = big
        if size != max(sizes):
            path = work / f"records-{size}.jsonl"
            write_records(path, size)
        fresh_state(svc)
        t0 = time.perf_counter()
        child = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--submit-child",
                str(path),
                "--job",
                f"submit-{size}",
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        wall = time.perf_counter() - t0
        if child.returncode != 0:
            raise RuntimeError(f"submit of {size} records failed:\n{child.stderr[-3000:]}")
        data = json.loads(child.stdout.strip().splitlines()[-1])
        client = redis.Redis.from_url(svc.broker_url)
        data["queue_len"] = int(client.llen(f"herd.{MODEL}"))
        client.close()
        data["size"] = size
        data["child_wall_s"] = wall
        data["prompts_per_s"] = data["read"] / data["submit_s"]
        results.append(data)
    return results


# ------------------------------------------------------------------------------------------------------ main


def fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:.0f}"


def per_task_ms(cpu: dict[str, float], n: int) -> str:
    return f"{cpu['worker'] * 1000 / n:.2f} ms"


def print_bare(r: dict[str, Any], n: int) -> None:
    print(f"  {n} tasks in {r['elapsed_s']:.2f}s (publishing took {r['publish_s']:.2f}s of it): ", end="")
    print(f"{r['tasks_per_s']:.0f} tasks/s; worker CPU per task {per_task_ms(r['cpu'], n)}")
    print(cpu_line(r["cpu"]))


def print_herd(r: dict[str, Any], n: int, profile: Path | None) -> None:
    print(f"  {r['attempts']} attempts ({r['errors']} errors) in {r['span_s']:.2f}s: ", end="")
    print(f"{r['attempts_per_s']:.0f} attempts/s; worker CPU per attempt {per_task_ms(r['cpu'], n)}")
    print(f"  prompt states {r['states']}; endpoint calls {r['double_calls']}")
    if r["first_error"]:
        print(f"  first error: {r['first_error']}")
    print(f"  wall clock from `herd submit` start to last attempt: {r['wall_s']:.2f}s ", end="")
    print(f"({n / r['wall_s']:.0f} prompts/s); submit CLI {r['submit_cli_s']:.2f}s, ", end="")
    print(f"first attempt started {r['first_attempt_after_s']:.2f}s after submit start")
    print(f"  endpoint latency seen by the worker: mean {r['latency_mean_ms']:.1f}ms, ", end="")
    print(f"p50 {r['latency_p50_ms']:.1f}ms, p99 {r['latency_p99_ms']:.1f}ms")
    print(cpu_line(r["cpu"]))
    print(f"  attempts finished per second since the first start: {r['timeline']}")
    if profile:
        summarize_profile(profile / "herd-worker.txt")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio_lines(runs: dict[str, list[dict[str, Any]]], n: int) -> list[str]:
    """Herd against the bare run with the same task-event settings, from the same run of this script:
    throughput ratio and worker CPU per message, medians over --repeat rounds."""
    lines = []
    for herd_key, bare_key, what in (
        ("herd", "bare", "both without task events (Herd's default)"),
        ("herd+events", "bare+events", "both with Herd's task events (HERD_TASK_EVENTS=1)"),
        ("baseline", "bare", "baseline checkout, both without task events"),
        ("baseline+events", "bare+events", "baseline checkout, both with task events"),
        ("herd", "bare-ht", "bare on Herd's Redis transport too, both without task events"),
        ("herd+events", "bare-ht+events", "bare on Herd's Redis transport too, both with task events"),
    ):
        herd, bare = runs.get(herd_key), runs.get(bare_key)
        if not herd or not bare:
            continue
        h_rate = median([r["attempts_per_s"] for r in herd])
        b_rate = median([r["tasks_per_s"] for r in bare])
        h_cpu = median([r["cpu"]["worker"] * 1000 / n for r in herd])
        b_cpu = median([r["cpu"]["worker"] * 1000 / n for r in bare])
        lines.append(
            f"Herd / bare Celery, {what}: {h_rate:.0f} attempts/s / {b_rate:.0f} tasks/s = "
            f"{h_rate / b_rate:.2f}x (goal >= 0.5x); worker CPU {h_cpu:.2f} ms per attempt vs "
            f"{b_cpu:.2f} ms per task"
        )
    return lines


def print_submit(subs: list[dict[str, Any]]) -> None:
    for r in subs:
        rate = f"{r['prompts_per_s']:.0f} prompts/s"
        print(
            f"  {r['size']:>7} records: submit() {r['submit_s']:.2f}s = {rate} (added {r['added']}); ", end=""
        )
        print(f"publish {r['dispatched']} msgs {r['publish_s']:.2f}s ", end="")
        print(f"(queue herd.{MODEL} holds {r['queue_len']}); child wall {r['child_wall_s']:.2f}s")
        # Not ru_maxrss alone: Linux keeps it across fork+exec, so the child reports at least our size.
        before, during = r["rss_start_kb"] / 1024, r["rss_submit_max_kb"] / 1024
        print(
            f"          RSS sampled every 10ms: {before:.0f} MB before submit(), max {during:.0f} MB ", end=""
        )
        print(f"during (ru_maxrss {r['rss_peak_kb'] / 1024:.0f} MB)")


def summary(runs: dict[str, list[dict[str, Any]]], n: int, subs: list[dict[str, Any]]) -> str:
    parts = []
    for key in ("bare", "bare+events"):
        if runs.get(key):
            parts.append(f"{key}: {median([r['tasks_per_s'] for r in runs[key]]):.0f} tasks/s")
    for key in ("herd", "herd+events"):
        if runs.get(key):
            parts.append(f"{key}: {median([r['attempts_per_s'] for r in runs[key]]):.0f} attempts/s")
    if runs.get("herd"):
        parts.append(f"herd wall {median([n / r['wall_s'] for r in runs['herd']]):.0f} prompts/s")
    if subs:
        big = subs[-1]
        parts.append(f"submit {big['size'] // 1000}k: {fmt_rate(big['prompts_per_s'])} prompts/s")
        if len(subs) > 1:
            sizes = "/".join(f"{r['size'] // 1000}k" for r in subs)
            rss = "/".join(f"{r['rss_submit_max_kb'] / 1024:.0f}" for r in subs)
            parts.append(f"RSS {sizes}: {rss} MB")
    return " | ".join(parts)


def run_pair(
    svc: Services, procs: Procs, work: Path, args: argparse.Namespace, window: int, events: bool, tag: str,
    profile: Path | None, runs: dict[str, list[dict[str, Any]]],
) -> None:  # fmt: skip
    """One bare Celery run and one Herd run with the same task-event settings, appended to `runs`."""
    n, c, suffix = args.prompts, args.concurrency, "+events" if events else ""
    if "bare" not in args.skip:
        with_events = "with Herd's task events (--task-events, sent events)"
        print(f"\n== bare Celery {with_events if events else 'without task events'}: ", end="")
        print(f"no-op task (one Redis INCR), threads pool, prefetch 1, acks_late =={tag}")
        bare = run_bare(svc, procs, work, n, c, args.loglevel, events=events)
        runs["bare" + suffix].append(bare)
        print_bare(bare, n)
        if args.bare_herd_transport:
            print(f"\n== the same bare Celery on Herd's Redis transport (herd/broker_transport.py) =={tag}")
            bare = run_bare(svc, procs, work, n, c, args.loglevel, events=events, herd_transport=True)
            runs["bare-ht" + suffix].append(bare)
            print_bare(bare, n)
    if "herd" not in args.skip:
        print(f"\n== Herd{' with HERD_TASK_EVENTS=1' if events else ''}: 1 model ({MODEL}: ", end="")
        print(f"openai chat on the endpoint double, max_in_flight {c}, no escalation), ", end="")
        print(f"1 worker, window {window} =={tag}")
        herd = run_herd(svc, procs, work, n, c, window, args.loglevel, profile, events=events)
        runs["herd" + suffix].append(herd)
        print_herd(herd, n, profile)
        if args.baseline_src is not None:
            print(
                f"\n== Herd from {args.baseline_src}{' with HERD_TASK_EVENTS=1' if events else ''}, ", end=""
            )
            print(f"otherwise the same =={tag}")
            base = run_herd(
                svc, procs, work, n, c, window, args.loglevel, None, events=events, src=args.baseline_src
            )
            runs["baseline" + suffix].append(base)
            print_herd(base, n, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=3000, help="N: bare tasks and Herd prompts")
    parser.add_argument("--submit-records", type=int, default=100_000, help="records to submit")
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads = max_in_flight")
    parser.add_argument("--window", type=int, default=None, help="HERD_DISPATCH_WINDOW (default: Herd's)")
    parser.add_argument("--loglevel", default="info", help="both workers' log level (herd's default: info)")
    parser.add_argument(
        "--bare-events", action="store_true", help="also bare Celery and Herd, both with Herd's task events"
    )
    parser.add_argument(
        "--bare-herd-transport",
        action="store_true",
        help="also bare Celery on Herd's Redis transport, to compare Herd's own work per attempt",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of the bare and Herd parts, alternating; medians"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="another checkout of Herd (e.g. `git archive main`): its Herd runs too, beside this one",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy record the Herd worker into DIR")
    parser.add_argument("--skip", action="append", default=[], choices=["bare", "herd", "submit"])
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, files)")
    parser.add_argument("--submit-child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.submit_child:
        submit_child(args.submit_child, args.job)
        return 0

    from herd.settings import Settings

    window = args.window or Settings().dispatch_window
    n, c = args.prompts, args.concurrency
    small = 10_000 if args.submit_records > 10_000 else max(1, args.submit_records // 10)

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt  # unwind like Ctrl-C, through every `finally` below

    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="herd-bench-"))
    procs = Procs(cwd=REPO)
    runs: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    subs: list[dict[str, Any]] = []
    try:
        with services(work / "home") as svc, stopping(procs):
            where = "embedded" if svc.embedded else "from HERD_DATABASE_URL / HERD_BROKER_URL"
            print(f"postgres + redis {where}; work dir {work}")
            print(f"N={n} concurrency={c} loglevel={args.loglevel} python={sys.version.split()[0]} ", end="")
            print(f"cores={os.cpu_count()} load average before start={os.getloadavg()[0]:.2f}")
            events_too = [False, True] if args.bare_events else [False]
            for round_ in range(1, args.repeat + 1):
                tag = f" [round {round_}/{args.repeat}]" if args.repeat > 1 else ""
                for events in events_too:
                    profile = args.profile if (round_ == 1 and not events) else None
                    run_pair(svc, procs, work, args, window, events, tag, profile, runs)
            if ratios := ratio_lines(runs, n):
                print(f"\n== ratios, same run (load average now {os.getloadavg()[0]:.2f}) ==")
                for line in ratios:
                    print("  " + line)
            if "submit" not in args.skip:
                print(
                    f"\n== submit: herd.jobs.submit.submit() in a child process, window {SUBMIT_WINDOW}, ",
                    end="",
                )
                print("no worker ==")
                subs = run_submit(svc, work, sorted({small, args.submit_records}))
                print_submit(subs)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + summary(runs, n, subs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

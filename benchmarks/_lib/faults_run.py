"""The fault-injection run of benchmarks/faults.py: a plan, its seeded faults, the processes under
them (a supervisor that restarts workers, as systemd or Kubernetes would), and the report.

Everything runs on 127.0.0.1 under the run's own HERD_HOME, with embedded Postgres and Redis started
for the run (never the machine's: the run kills them).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._lib.faults_figures import (
    MODELS,
    CallFigures,
    LedgerFigures,
    LogFigures,
    call_figures,
    ledger_figures,
    log_figures,
    stuck_report,
)
from benchmarks._lib.faults_netns import ENDPOINTS_IP, SERVICES_IP, Netlab
from benchmarks._lib.faults_plan import JOB, TASK, Event, Plan, double_script, schedule, write_docs
from herd.embedded.servers import ensure_postgres, ensure_redis
from tests.support.harness import (
    DoubleProcess,
    Services,
    herd_env,
    herd_yaml,
    services,
    start_double,
    wait_worker_ready,
    worker_command,
)
from tests.support.processes import Procs


@dataclass(frozen=True)
class FaultReport:
    """Everything one run measured; `dataclasses.asdict` of it is the --json file."""

    plan: Plan
    events: list[Event]
    skipped: list[str]  # faults not run, each with its reason
    unexpected_exits: list[str]  # workers that exited by themselves (and were restarted)
    worker_starts: dict[str, int]
    drained: bool
    drained_at_s: float | None  # seconds after submit
    last_fault_s: float
    open_at_last_fault: int | None
    drain_after_last_fault_s: float | None
    lost: int  # prompts neither done nor failed at the end
    max_queued: int  # most prompts queued at once (polled every 0.5 s)
    ledger: LedgerFigures
    calls: CallFigures
    logs: LogFigures
    stuck: dict[str, Any]  # what is not finished, when not drained
    goals: dict[str, bool]


class Run:
    """Every process of one run on `services` (embedded under its home); `procs.stop_all()` stops them."""

    def __init__(self, plan: Plan, svc: Services) -> None:
        self.plan, self.services, self.home = plan, svc, svc.home
        self.work = svc.home / "work"
        self.work.mkdir(parents=True)
        self.procs = Procs(cwd=self.work)
        self.workers: dict[str, subprocess.Popen[Any]] = {}
        self.worker_logs: list[Path] = []
        self.worker_starts: collections.Counter[str] = collections.Counter()
        self.unexpected_exits: list[str] = []
        self.killed: set[int] = set()  # pids we SIGKILLed on purpose
        self.doubles: dict[str, DoubleProcess] = {}
        self.ports: dict[str, int] = {}
        self.env: dict[str, str] = {}
        self.worker_env: dict[str, str] = {}  # the workers' own: across the partition when there is one
        self.netlab: Netlab | None = None  # the workers' host, when the plan has a partition

    # -- services ------------------------------------------------------------------------------

    def service_pid(self, name: str) -> int | None:
        path = (
            self.home / "postgres" / "data" / "postmaster.pid"
            if name == "postgres"
            else self.home / "redis" / "redis.pid"
        )
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_service(self, name: str) -> str:
        pid = self.service_pid(name)
        if pid is None:
            return f"no {name} pid file"
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return f"{name} pid {pid} already gone"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        return f"SIGKILL {name} pid {pid}"

    def wipe_redis(self) -> str:
        """Delete the (dead) embedded Redis's files, AOF and snapshot, so it starts again with no data."""
        rd = self.home / "redis"
        gone = []
        for name in ("appendonlydir", "appendonly.aof", "dump.rdb"):
            path = rd / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            gone.append(name)
        return f"deleted {', '.join(gone) or 'nothing (no files)'}"

    def sweep_due_in(self) -> float | None:
        """Seconds until the first queued prompt is due for the stale sweep (database clock), or None
        if no prompt is queued or Postgres is unreachable."""
        try:
            with psycopg.connect(self.services.database_url, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT extract(epoch FROM min(enqueued_at) - now()) FROM prompts WHERE state = 'queued'"
                ).fetchone()
        except psycopg.Error:
            return None
        if row is None or row[0] is None:
            return None
        return max(0.0, float(row[0]) + self.plan.stale_after_s)

    def restart_service(self, name: str) -> str:
        t = time.monotonic()
        url = ensure_postgres(self.home) if name == "postgres" else ensure_redis(self.home)
        same = url == (self.services.database_url if name == "postgres" else self.services.broker_url)
        return f"{name} back in {time.monotonic() - t:.1f}s" + ("" if same else f" AT A NEW URL {url}")

    # -- endpoint doubles ------------------------------------------------------------------------

    def start_double(self, model: str) -> None:
        """The model's faulty double (tests/support/faulty.py), on its old port when restarted."""
        script = self.work / "script.json"
        if not script.exists():
            script.write_text(json.dumps(double_script(self.plan)))
        faults = dict(self.plan.faults, hang_s=self.plan.hang_s, seed=self.plan.seed)
        args = ["--script", str(script), "--faults", json.dumps(faults)]
        args += ["--call-log", str(self.work / f"calls-{model}.jsonl")]
        double = start_double(
            self.procs,
            module="tests.support.faulty",
            args=args,
            port=self.ports.get(model, 0),
            errlog=self.work / f"double-{model}.log",
        )
        self.doubles[model] = double
        self.ports[model] = double.port

    def kill_double(self, model: str) -> str:
        proc = self.doubles[model].proc
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs.forget(proc)
        return f"SIGKILL endpoint double of {model} (port {self.ports[model]})"

    # -- workers ---------------------------------------------------------------------------------

    def configure(self) -> Path:
        herd_file = self.work / "herd.yaml"
        p = self.plan
        endpoints = {m: self.doubles[m].model_url(m) for m in MODELS}
        herd_file.write_text(
            herd_yaml(
                endpoints,
                retries=p.retries,
                timeout_s=p.timeout_s,
                backoff_s=p.backoff_s,
                backoff_max_s=p.backoff_max_s,
                max_in_flight=p.max_in_flight,
            )
        )
        # Explicit URLs (herd_env): a worker must never start (or restart) the embedded servers itself.
        self.env = herd_env(
            self.services,
            herd_file,
            HERD_STALE_AFTER_S=str(p.stale_after_s),
            HERD_VISIBILITY_TIMEOUT_S=str(p.visibility_timeout_s),
            HERD_PUMP_INTERVAL_S=str(p.pump_interval_s),
            HERD_DISPATCH_WINDOW=str(p.dispatch_window),
        )
        self.worker_env = self.env
        if self.netlab is not None:
            self.worker_env = self.across_netlab(herd_file, endpoints)
        return herd_file

    def across_netlab(self, herd_file: Path, endpoints: dict[str, str]) -> dict[str, str]:
        """The workers' environment on the netlab's worker host: Redis and Postgres through the
        forwarders on SERVICES_IP, the doubles through those on ENDPOINTS_IP (a herd file of its own)."""
        assert self.netlab is not None
        logs = self.work / "forwarders.log"
        svc = {self.services.database_url, self.services.broker_url}
        for url in svc:
            self.netlab.forward(SERVICES_IP, int(url.rsplit(":", 1)[1].split("/", 1)[0]), logs)
        for model in MODELS:
            self.netlab.forward(ENDPOINTS_IP, self.ports[model], logs)
        ns_file = self.work / "herd-workers.yaml"
        text = herd_file.read_text()
        for url in endpoints.values():
            text = text.replace(url, url.replace("127.0.0.1", ENDPOINTS_IP))
        ns_file.write_text(text)
        env = dict(self.env, HERD_HERD_FILE=str(ns_file))
        for key in ("HERD_DATABASE_URL", "HERD_BROKER_URL"):
            env[key] = env[key].replace("@127.0.0.1:", f"@{SERVICES_IP}:")
        return env

    def start_worker(self, model: str) -> subprocess.Popen[Any]:
        self.worker_starts[model] += 1
        log = self.work / f"worker-{model}-{self.worker_starts[model]}.log"
        self.worker_logs.append(log)
        cmd = worker_command(model)
        if self.netlab is not None:
            cmd = self.netlab.wrap(cmd)
        proc = self.procs.start(cmd, env=self.worker_env, log=log)
        self.workers[model] = proc
        return proc

    def wait_ready(self, model: str, timeout: float = 90) -> None:
        log, proc = self.worker_logs[-1], self.workers[model]
        wait_worker_ready(proc, log, model, f"worker {model}", timeout=timeout)

    def kill_worker(self, model: str) -> str:
        proc = self.workers[model]
        if proc.poll() is not None:
            return f"worker {model} was not running"
        self.killed.add(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return f"SIGKILL worker {model} pid {proc.pid}"

    def supervise(self, now: float) -> None:
        """Restart any worker that has exited, as systemd or Kubernetes would."""
        for model, proc in list(self.workers.items()):
            code = proc.poll()
            if code is None:
                continue
            if proc.pid not in self.killed:
                self.unexpected_exits.append(f"t={now:.1f}s worker {model} pid {proc.pid} exited ({code})")
            self.procs.forget(proc)
            self.start_worker(model)

    # -- observing -------------------------------------------------------------------------------

    def states(self) -> dict[str, int] | None:
        """Prompt counts per state, or None while Postgres is unreachable."""
        try:
            with psycopg.connect(self.services.database_url, connect_timeout=2, autocommit=True) as conn:
                rows = conn.execute("SELECT state, count(*) FROM prompts GROUP BY state").fetchall()
        except psycopg.Error:
            return None
        return {str(state): int(n) for state, n in rows}


def perform(run: Run, ev: Event) -> None:
    kind = ev.action
    if kind == "kill-worker":
        ev.note = run.kill_worker(ev.target)
    elif kind in ("kill-redis", "kill-postgres"):
        ev.note = run.kill_service(kind.split("-", 1)[1])
    elif kind in ("kill-redis-empty", "kill-redis-at-sweep"):
        ev.note = f"{run.kill_service('redis')}; {run.wipe_redis()}"
    elif kind in ("start-redis", "start-postgres"):
        ev.note = run.restart_service(kind.split("-", 1)[1])
    elif kind in ("start-redis-empty", "start-redis-at-sweep"):
        ev.note = run.restart_service("redis") + " with no data"
    elif kind in ("cut-network", "heal-network"):
        assert run.netlab is not None
        ev.note = run.netlab.cut() if kind == "cut-network" else run.netlab.heal()
    elif kind == "kill-endpoint":
        ev.note = run.kill_double(ev.target)
    elif kind == "start-endpoint":
        run.start_double(ev.target)
        ev.note = f"endpoint double of {ev.target} back on port {run.ports[ev.target]}"
    else:
        raise ValueError(kind)


def _is_service(ev: Event) -> bool:
    return ev.action.split("-")[1] in ("redis", "postgres", "network")


def _at_sweep(run: Run, now: float) -> list[Event]:
    """The second strike of the empty Redis: killed (and its files deleted) just before the first prompt
    left queued by the first strike is due for the stale sweep, and down for at least two pump ticks,
    so the sweep's re-sends meet a dead broker. None if nothing is queued (the fault is then noted)."""
    due_in = run.sweep_due_in()
    if due_in is None:
        return []
    tick = run.plan.pump_interval_s
    down = max(run.plan.service_down_s, 2 * tick + 0.5)
    return [Event("kill-redis-at-sweep", at=now + max(0.0, due_in - tick / 2), down_s=down)]


def run_suite(plan: Plan, home: Path, say: Callable[[str], None]) -> FaultReport:
    """One run under `home` (a fresh folder); `say` gets a line as each step and fault happens."""
    events = schedule(plan)
    skipped: list[str] = []
    with services(home, from_env=False) as svc:
        say(f"embedded Postgres and Redis under {home} in {svc.started_s:.1f}s")
        run = Run(plan, svc)
        try:
            if plan.partition_s:
                why = Netlab.unavailable()
                if why is None:
                    run.netlab = Netlab(run.procs)
                    try:
                        run.netlab.start()
                    except (OSError, subprocess.SubprocessError) as exc:
                        run.netlab.stop()
                        run.netlab, why = None, f"network namespaces unavailable: {exc}"
                if why is not None:
                    skipped.append(f"partition: {why}")
                    say(f"SKIPPED the partition fault: {why}")
                    events = [ev for ev in events if ev.action != "cut-network"]
            return _drive(run, events, skipped, say)
        finally:
            run.procs.stop_all()  # workers and doubles before the services they talk to
            if run.netlab is not None:
                run.netlab.stop()


def _drive(run: Run, events: list[Event], skipped: list[str], say: Callable[[str], None]) -> FaultReport:
    plan = run.plan
    for model in MODELS:
        run.start_double(model)
    run.configure()
    docs = run.work / "docs.jsonl"
    write_docs(docs, plan)
    for model in MODELS:
        run.start_worker(model)
    for model in MODELS:
        run.wait_ready(model)
    submit = subprocess.run(
        [sys.executable, "-m", "herd", "submit", str(docs), "--job", JOB, "--task", TASK],
        env=run.env,
        cwd=run.work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if submit.returncode != 0:
        raise RuntimeError(f"herd submit failed ({submit.returncode}):\n{submit.stderr}")
    t0, t0_wall = time.monotonic(), time.time()
    say(
        f"submitted {plan.prompts} prompts; faults fire between {plan.faults_from:.0%} and "
        f"{plan.faults_until:.0%} of the prompts finished"
    )
    drained_at: float | None = None
    finished = max_queued = 0
    next_poll = 0.0
    waiting = list(events)  # kills, by progress
    timed: list[Event] = []  # restarts, by time
    while True:
        now = time.monotonic() - t0
        due = [ev for ev in timed if (ev.at or 0.0) <= now]
        # A service's kill waits while another service is down or an empty-Redis fault is under way.
        services_busy = any(_is_service(ev) for ev in timed)
        due += [
            ev
            for ev in waiting
            if (ev.after or 0.0) * plan.prompts <= finished and not (services_busy and _is_service(ev))
        ]
        for ev in due:
            (timed if ev in timed else waiting).remove(ev)
            ev.open_prompts = plan.prompts - finished
            perform(run, ev)
            ev.fired_at = now = time.monotonic() - t0
            say(f"  t={now:6.1f}s {ev.note} [{ev.open_prompts} open]")
            follow = []
            if ev.down_s:
                back = "heal-network" if ev.action == "cut-network" else "start-" + ev.action.split("-", 1)[1]
                follow.append(Event(back, ev.target, at=now + ev.down_s))
            if ev.action == "start-redis-empty":
                follow += _at_sweep(run, now)
            for later in follow:
                timed.append(later)
                events.append(later)
        run.supervise(now)
        if now >= next_poll:
            next_poll = now + 0.5
            states = run.states()
            if states is not None:
                finished = states.get("done", 0) + states.get("failed", 0)
                max_queued = max(max_queued, states.get("queued", 0))
                if finished == plan.prompts and not waiting and not timed:
                    drained_at = now
                    break
        if now > plan.deadline_s:
            break
        time.sleep(0.1)
    alive = {m: p.poll() is None for m, p in run.workers.items()}
    stuck = (
        stuck_report(run.services.database_url, run.services.broker_url, alive) if drained_at is None else {}
    )
    fired = [ev for ev in events if ev.fired_at is not None]
    last = max(fired, key=lambda ev: ev.fired_at or 0.0, default=None)
    last_fault = last.fired_at if last and last.fired_at is not None else 0.0
    run.procs.stop_all()  # workers and doubles stop before the figures are read: nothing moves any more
    ledger, attempt_rows = ledger_figures(run.services.database_url, t0_wall)
    lost = plan.prompts - ledger.states.get("done", 0) - ledger.states.get("failed", 0)
    drain_after = None if drained_at is None else drained_at - last_fault
    goals = {
        "0 prompts lost": lost == 0,
        "0 duplicate finals": ledger.duplicate_finals == 0 and ledger.duplicate_attempts == 0,
        "every failure with a reason": ledger.failed_without_reason == 0,
        "drained within one stale period of the last fault": drain_after is not None
        and drain_after <= plan.stale_after_s,
        "every fault hit the job while prompts were open": all(
            (ev.open_prompts or 0) > 0 for ev in events if ev.action.startswith(("kill", "cut"))
        ),
        "every fault fired": all(ev.fired_at is not None for ev in events),
        "the empty Redis struck again at a due stale sweep": not plan.empty_redis
        or any(ev.action == "kill-redis-at-sweep" and ev.fired_at is not None for ev in events),
    }
    return FaultReport(
        plan=plan,
        events=events,
        skipped=skipped,
        unexpected_exits=run.unexpected_exits,
        worker_starts=dict(run.worker_starts),
        drained=drained_at is not None,
        drained_at_s=drained_at,
        last_fault_s=last_fault,
        open_at_last_fault=last.open_prompts if last else None,
        drain_after_last_fault_s=drain_after,
        lost=lost,
        max_queued=max_queued,
        ledger=ledger,
        calls=call_figures(run.work, attempt_rows),
        logs=log_figures(run.worker_logs),
        stuck=stuck,
        goals=goals,
    )

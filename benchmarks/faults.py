"""Fault injection: a 3-tier herd under injected faults, and whether Herd's delivery guarantees hold.

    python benchmarks/faults.py [--prompts 1000] [--short] [--seed 1] [--json OUT] [--keep]

The scenario (docs/reliability.md), everything on 127.0.0.1 under a private, temporary HERD_HOME:

* An embedded Postgres and Redis (herd/local/embedded.py) started for the run, so the suite may kill
  them: never the machine's own servers (HERD_DATABASE_URL / HERD_BROKER_URL are ignored).
* Three endpoint doubles, one per model, out of process (tests/support/faulty.py): small (OpenAI chat)
  -> medium (TGI) -> large (OpenAI completions). Each call draws, seeded, 5% HTTP 424, 5% 5xx, 3% 429,
  2% malformed 200 bodies and 2% hangs past the client's timeout; the others answer after --latency
  seconds. About 60% of the prompts are confident on small, 25% on medium, 15% reach large.
* One `herd worker` per model, supervised: a worker that exits for any reason is restarted.
* `herd submit` of the prompts, then, each at a seeded random point of the job's progress (between 5% and
  90% of the prompts finished, so the faults hit a running job on a fast or a slow machine): workers
  SIGKILLed (their whole process group; the last kill, the last fault, at 90%), Redis SIGKILLed and
  restarted, Postgres (the postmaster) SIGKILLed and restarted, and one model's double (medium)
  SIGKILLed and restarted on the same port after 60 seconds (8 with --short). Redis and Postgres stay
  down a few seconds each, never both at once.
* Short plumbing periods so the run drains in minutes (printed with the figures): HERD_STALE_AFTER_S,
  HERD_VISIBILITY_TIMEOUT_S, HERD_PUMP_INTERVAL_S and a dispatch window small enough that no prompt
  waits in Redis for a whole stale period.

It prints prompts lost (neither done nor failed once drained), duplicate finals and duplicate attempts
per step, model calls beyond one per step (calls the doubles received against attempts recorded and
their retries), failures grouped by reason, errors and tracebacks in the worker logs, and the time from
the end of the last fault to the drained job. Goal: 0 lost, 0 duplicate finals, every failure with a
reason, drained within one stale period of the last fault. If the job has not drained by the deadline
it stops and prints what is stuck (states, steps, queue lengths) instead. Exit status: 0 when every goal
holds, 1 when one does not, 2 when not drained by the deadline, 130 on Ctrl-C. Every process it starts
is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/faults.py`: sys.path[0] is benchmarks/
    sys.path.insert(0, str(REPO))

from tests.support.processes import Procs  # noqa: E402

MODELS = ("small", "medium", "large")
PROTOCOLS = {"small": "openai chat", "medium": "TGI", "large": "OpenAI completions"}
JOB, TASK = "faults", "qa"
DOC_RE = re.compile(r"\bq(\d{5})\b")
CONFIDENT, UNSURE = [0.95, 0.03], [0.40, 0.35]  # margins 0.92 and 0.05 against thresholds of 0.5


@dataclass
class Plan:
    prompts: int = 1000
    seed: int = 1
    worker_kills: int = 5
    faults_from: float = 0.05  # faults fire between these fractions of the prompts finished
    faults_until: float = 0.9
    endpoint_down_s: float = 60.0
    down_model: str = "medium"
    service_down_s: float = 5.0  # how long Redis and Postgres stay down after their SIGKILL
    stale_after_s: float = 30.0
    visibility_timeout_s: int = 20
    pump_interval_s: float = 2.0
    dispatch_window: int = 40
    latency_s: float = 0.5  # per successful model call: paces the run to outlast the fault window
    timeout_s: float = 3.0  # the models' client timeout
    hang_s: float = 6.0  # a hang: longer than timeout_s
    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 4.0
    max_in_flight: int = 4
    deadline_s: float = 600.0  # from submit: give up and report what is stuck
    faults: dict[str, float] = field(
        default_factory=lambda: {
            "status424": 0.05,
            "status5xx": 0.05,
            "status429": 0.03,
            "malformed": 0.02,
            "hang": 0.02,
        }
    )


SHORT = Plan(
    prompts=150,
    worker_kills=2,
    endpoint_down_s=8.0,
    service_down_s=2.0,
    stale_after_s=15.0,
    visibility_timeout_s=10,
    pump_interval_s=1.0,
    dispatch_window=20,
    latency_s=0.5,
    timeout_s=2.0,
    hang_s=4.0,
    backoff_s=0.2,
    backoff_max_s=1.0,
    deadline_s=100.0,
)


# ------------------------------------------------------------------------------------------------ setup


def herd_yaml(urls: dict[str, str], plan: Plan) -> str:
    common = (
        f"    max_in_flight: {plan.max_in_flight}\n"
        f"    timeout_s: {plan.timeout_s}\n"
        f"    retries: {{max: {plan.retries}, backoff_s: {plan.backoff_s}, "
        f"backoff_max_s: {plan.backoff_max_s}}}\n"
    )
    return f"""\
models:
  small:
    protocol: openai
    endpoints: {urls["small"]}/v1
{common}    gpus: {{type: L4, count: 1, usd_per_hour: 0.8}}
    escalation: {{next: medium, measure: first_token_margin, threshold: 0.5}}
  medium:
    protocol: tgi
    endpoints: {urls["medium"]}
    prompt_mode: completion
{common}    gpus: {{type: A10G, count: 1, usd_per_hour: 1.2}}
    escalation: {{next: large, measure: first_token_margin, threshold: 0.5}}
  large:
    protocol: openai
    endpoints: {urls["large"]}/v1
    prompt_mode: completion
{common}    gpus: {{type: A100, count: 2, usd_per_hour: 3.0}}
tasks:
  qa:
    kind: qa
    completion: "Q: {{text}}\\nA:"
"""


def double_script(plan: Plan) -> dict[str, Any]:
    d = plan.latency_s
    return {
        "rules": [
            {"model": "small", "match": "(easy)", "text": "small says", "first": CONFIDENT, "delay": d},
            {"model": "small", "match": "", "text": "small unsure", "first": UNSURE, "delay": d},
            {"model": "medium", "match": "(medium)", "text": "medium says", "first": CONFIDENT, "delay": d},
            {"model": "medium", "match": "", "text": "medium unsure", "first": UNSURE, "delay": d},
            {"model": "large", "match": "", "text": "large says", "first": [0.6, 0.3], "delay": d},
        ]
    }


def write_docs(path: Path, plan: Plan) -> None:
    rng = random.Random(f"docs|{plan.seed}")
    with path.open("w") as fh:
        for i in range(plan.prompts):
            kind = rng.choices(("easy", "medium", "hard"), weights=(60, 25, 15))[0]
            text = f"question q{i:05d} ({kind}): what is {i} plus {i}?"
            fh.write(json.dumps({"id": f"q{i:05d}", "text": text, "reference": str(2 * i)}) + "\n")


@dataclass
class Event:
    """A fault: fired once `after` of the prompts are finished (done or failed), or, for a restart, at
    `at` seconds after submit. A kill with `down_s` schedules its restart that long after it."""

    action: str  # kill-worker | kill-redis | start-redis | kill-postgres | start-postgres | kill-endpoint ...
    target: str = ""
    after: float | None = None  # fraction of prompts finished
    at: float | None = None  # seconds after submit
    down_s: float = 0.0
    fired_at: float | None = None  # seconds after submit, when the action completed
    note: str = ""
    open_prompts: int | None = None  # prompts neither done nor failed at that moment (last poll)


def schedule(plan: Plan) -> list[Event]:
    """Seeded faults at random points of the job's progress (so they hit a running job on any machine):
    Redis goes down in the first part and Postgres in the second, so those two never overlap; the
    endpoint outage starts in the first half; worker kills anywhere, the last one at `faults_until`."""
    rng = random.Random(f"schedule|{plan.seed}")
    lo, hi = plan.faults_from, plan.faults_until
    mid = (lo + hi) / 2
    events = [
        Event("kill-redis", after=rng.uniform(lo, mid), down_s=plan.service_down_s),
        Event("kill-postgres", after=rng.uniform(mid, hi), down_s=plan.service_down_s),
        Event("kill-endpoint", plan.down_model, after=rng.uniform(lo, mid), down_s=plan.endpoint_down_s),
    ]
    if rng.random() < 0.5:  # either order of Redis and Postgres
        events[0].after, events[1].after = events[1].after, events[0].after
    for i in range(plan.worker_kills):  # the last one at `faults_until`: the last fault, at a known point
        after = hi if i == plan.worker_kills - 1 else rng.uniform(lo, hi)
        events.append(Event("kill-worker", rng.choice(MODELS), after=after))
    return sorted(events, key=lambda e: e.after or 0.0)


# ---------------------------------------------------------------------------------------------- the run


class Run:
    """Owns every process of one run; `close()` stops them all (idempotent)."""

    def __init__(self, plan: Plan, home: Path, say: Callable[[str], None]) -> None:
        self.plan, self.home, self.say = plan, home, say
        self.work = home / "work"
        self.work.mkdir(parents=True)
        self.procs = Procs(cwd=self.work)
        self.workers: dict[str, subprocess.Popen[Any]] = {}
        self.worker_logs: list[Path] = []
        self.worker_starts: collections.Counter[str] = collections.Counter()
        self.unexpected_exits: list[str] = []
        self.killed: set[int] = set()  # pids we SIGKILLed on purpose
        self.doubles: dict[str, subprocess.Popen[Any]] = {}
        self.ports: dict[str, int] = {}
        self.services_started = False
        self.db_url = self.broker_url = ""
        self.env: dict[str, str] = {}
        self.t0 = 0.0  # monotonic time of submit

    # -- services ------------------------------------------------------------------------------

    def start_services(self) -> None:
        from herd.ledger.db import migrate
        from herd.local.embedded import ensure_postgres, ensure_redis

        t = time.monotonic()
        self.services_started = True
        self.db_url, self.broker_url = ensure_postgres(self.home), ensure_redis(self.home)
        migrate(self.db_url)
        self.say(f"embedded Postgres and Redis under {self.home} in {time.monotonic() - t:.1f}s")

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

    def restart_service(self, name: str) -> str:
        from herd.local.embedded import ensure_postgres, ensure_redis

        t = time.monotonic()
        url = ensure_postgres(self.home) if name == "postgres" else ensure_redis(self.home)
        same = url == (self.db_url if name == "postgres" else self.broker_url)
        return f"{name} back in {time.monotonic() - t:.1f}s" + ("" if same else f" AT A NEW URL {url}")

    # -- endpoint doubles ------------------------------------------------------------------------

    def start_double(self, model: str) -> None:
        script = self.work / "script.json"
        if not script.exists():
            script.write_text(json.dumps(double_script(self.plan)))
        faults = dict(self.plan.faults, hang_s=self.plan.hang_s, seed=self.plan.seed)
        cmd = [sys.executable, "-m", "tests.support.faulty", "--port", str(self.ports.get(model, 0))]
        cmd += ["--script", str(script), "--faults", json.dumps(faults)]
        cmd += ["--call-log", str(self.work / f"calls-{model}.jsonl")]
        errlog = (self.work / f"double-{model}.log").open("ab")
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=errlog, start_new_session=True, env=self.child_env()
        )
        errlog.close()
        self.procs.procs.append(proc)
        self.doubles[model] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()  # the double prints READY once listening
        if not line.startswith("READY "):
            raise RuntimeError(f"double for {model} did not start: {line!r}; see {errlog.name}")
        self.ports[model] = int(line.rsplit(":", 1)[1])

    def kill_double(self, model: str) -> str:
        proc = self.doubles[model]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs.procs.remove(proc)
        return f"SIGKILL endpoint double of {model} (port {self.ports[model]})"

    # -- workers ---------------------------------------------------------------------------------

    def child_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env | self.env | extra

    def configure(self) -> Path:
        urls = {m: f"http://127.0.0.1:{self.ports[m]}/m/{m}" for m in MODELS}
        herd_file = self.work / "herd.yaml"
        herd_file.write_text(herd_yaml(urls, self.plan))
        p = self.plan
        self.env = {
            # Explicit URLs: a worker must never start (or restart) the embedded servers itself.
            "HERD_DATABASE_URL": self.db_url,
            "HERD_BROKER_URL": self.broker_url,
            "HERD_HOME": str(self.home),
            "HERD_HERD_FILE": str(herd_file),
            "HERD_STALE_AFTER_S": str(p.stale_after_s),
            "HERD_VISIBILITY_TIMEOUT_S": str(p.visibility_timeout_s),
            "HERD_PUMP_INTERVAL_S": str(p.pump_interval_s),
            "HERD_DISPATCH_WINDOW": str(p.dispatch_window),
        }
        return herd_file

    def start_worker(self, model: str) -> subprocess.Popen[Any]:
        self.worker_starts[model] += 1
        log = self.work / f"worker-{model}-{self.worker_starts[model]}.log"
        self.worker_logs.append(log)
        cmd = [sys.executable, "-m", "herd", "worker", "--model", model, "--loglevel", "info"]
        proc = self.procs.start(cmd, env=self.child_env(), log=log)
        self.workers[model] = proc
        return proc

    def wait_ready(self, model: str, timeout: float = 90) -> None:
        log, proc = self.worker_logs[-1], self.workers[model]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if " ready." in text:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"worker {model} exited ({proc.returncode}):\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {model} not ready in {timeout:.0f}s; see {log}")

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
            self.procs.procs.remove(proc)
            self.start_worker(model)

    def close(self) -> None:
        self.procs.stop_all()  # workers and doubles first: they talk to the services
        if self.services_started:
            from herd.local.embedded import stop_all

            try:
                stop_all(self.home)
            except Exception as exc:  # noqa: BLE001 - report, and let the caller clean up the rest
                print(f"warning: could not stop the embedded services: {exc}", file=sys.stderr)

    # -- observing -------------------------------------------------------------------------------

    def states(self) -> dict[str, int] | None:
        """Prompt counts per state, or None while Postgres is unreachable."""
        import psycopg

        try:
            with psycopg.connect(self.db_url, connect_timeout=2, autocommit=True) as conn:
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
    elif kind in ("start-redis", "start-postgres"):
        ev.note = run.restart_service(kind.split("-", 1)[1])
    elif kind == "kill-endpoint":
        ev.note = run.kill_double(ev.target)
    elif kind == "start-endpoint":
        run.start_double(ev.target)
        ev.note = f"endpoint double of {ev.target} back on port {run.ports[ev.target]}"
    else:
        raise ValueError(kind)


# ----------------------------------------------------------------------------------------------- figures


def _norm(reason: str) -> str:
    """Group failure reasons: URLs, ids and numbers other than HTTP statuses do not make a new reason."""
    reason = re.sub(r"https?://\S+", "<url>", reason)
    reason = re.sub(r"\b(0x[0-9a-f]+|[0-9a-f]{8}-[0-9a-f-]{27})\b", "<id>", reason)
    reason = re.sub(r"(?<![\w.])\d+\.\d+(?![\w.])", "<n>", reason)
    reason = re.sub(r"\bq\d{5}\b", "<doc>", reason)
    return reason[:160]


def ledger_figures(db_url: str, t0_wall: float) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        q = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        states = {s: int(n) for s, n in q("SELECT state, count(*) FROM prompts GROUP BY state")}
        dup_finals = q("SELECT count(*) FROM (SELECT prompt_id FROM finals GROUP BY 1 HAVING count(*) > 1) d")
        dup_attempts = q(
            "SELECT count(*) FROM (SELECT 1 FROM attempts GROUP BY prompt_id, model, stage, round "
            "HAVING count(*) > 1) d"
        )
        done_no_final = q(
            "SELECT count(*) FROM prompts p WHERE p.state = 'done' "
            "AND NOT EXISTS (SELECT FROM finals f WHERE f.prompt_id = p.id)"
        )
        final_not_done = q(
            "SELECT count(*) FROM finals f JOIN prompts p ON p.id = f.prompt_id WHERE p.state <> 'done'"
        )
        no_reason = q(
            "SELECT count(*) FROM prompts WHERE state = 'failed' AND coalesce(trim(error), '') = ''"
        )
        reasons: collections.Counter[str] = collections.Counter()
        for (error,) in q("SELECT error FROM prompts WHERE state = 'failed'"):
            reasons[_norm(error or "<no reason>")] += 1
        attempts = q(
            "SELECT p.doc_key, a.model, a.status, a.retries "
            "FROM attempts a JOIN prompts p ON p.id = a.prompt_id"
        )
        finals_by_model: dict[str, int] = dict(q("SELECT model, count(*) FROM finals GROUP BY 1"))
        # The last prompts to finish, with each attempt's (start..end) in seconds after submit.
        tail = conn.execute(
            """SELECT p.doc_key, p.state, extract(epoch FROM p.finished_at)::float8 - %(t0)s,
                      (SELECT string_agg(format('%%s %%s r%%s %%s..%%ss', a.model, a.status, a.retries,
                                round((extract(epoch FROM a.started_at) - %(t0)s)::numeric, 1),
                                round((extract(epoch FROM a.finished_at) - %(t0)s)::numeric, 1)), ', '
                                ORDER BY a.id)
                       FROM attempts a WHERE a.prompt_id = p.id)
               FROM prompts p WHERE p.finished_at IS NOT NULL ORDER BY p.finished_at DESC LIMIT 5""",
            {"t0": t0_wall},
        ).fetchall()
    return {
        "states": states,
        "duplicate_finals": int(dup_finals[0][0]),
        "duplicate_attempts": int(dup_attempts[0][0]),
        "done_without_final": int(done_no_final[0][0]),
        "final_not_done": int(final_not_done[0][0]),
        "failed_without_reason": int(no_reason[0][0]),
        "failure_reasons": dict(reasons.most_common()),
        "finals_by_model": {str(m): int(n) for m, n in finals_by_model.items()},
        "attempt_rows": [(str(d), str(m), str(s), int(r)) for d, m, s, r in attempts],
        "last_finished": [f"{d} {s} at t={f:.1f}s: {a}" for d, s, f, a in tail],
    }


def call_figures(work: Path, attempt_rows: list[tuple[str, str, str, int]]) -> dict[str, Any]:
    """Calls the doubles received, per step, against attempts recorded and the retries they carry."""
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    faults: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in MODELS}
    total: collections.Counter[str] = collections.Counter()
    for model in MODELS:
        path = work / f"calls-{model}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                call = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            doc = DOC_RE.search(call.get("prompt", ""))
            if doc is None:
                continue
            calls[(f"q{doc.group(1)}", model)] += 1
            total[model] += 1
            faults[model][call.get("fault") or "none"] += 1
    expected: dict[tuple[str, str], int] = {}
    for doc_key, model, _status, retries in attempt_rows:
        expected[(doc_key, model)] = retries + 1  # the recorded call plus one per retry before it
    beyond = without_attempt = fewer = 0
    for step, n in calls.items():
        want = expected.get(step, 0)
        if want == 0:
            without_attempt += n
        beyond += max(0, n - want)
    for step, want in expected.items():
        fewer += max(0, want - calls.get(step, 0))  # refused while the endpoint was down
    attempts_per_model = collections.Counter(row[1] for row in attempt_rows)
    retries_per_model: collections.Counter[str] = collections.Counter()
    for _d, model, _s, r in attempt_rows:
        retries_per_model[model] += r
    return {
        "calls": dict(total),
        "calls_total": sum(total.values()),
        "attempts": dict(attempts_per_model),
        "attempts_total": len(attempt_rows),
        "retries_total": sum(retries_per_model.values()),
        "calls_beyond_one_per_step": sum(total.values()) - len(attempt_rows),
        "calls_beyond_step_and_retries": beyond,
        "calls_for_steps_without_attempt": without_attempt,
        "retries_not_reaching_endpoint": fewer,
        "faults_drawn": {m: dict(c) for m, c in faults.items()},
    }


def log_figures(logs: list[Path]) -> dict[str, Any]:
    """Errors and tracebacks the workers logged, grouped."""
    tracebacks = 0
    errors: collections.Counter[str] = collections.Counter()
    unexpected: collections.Counter[str] = collections.Counter()
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("Traceback"):
                tracebacks += 1
            m = re.search(r"raised unexpected: (.*)", line)
            if m:
                unexpected[_norm(m.group(1))[:140]] += 1
            elif re.search(r"\b(ERROR|CRITICAL)\b", line):
                msg = re.sub(r"^\[[^\]]*\]\s*", "", line)
                msg = re.sub(r"\[[0-9a-f-]{36}\]", "[<task>]", msg)
                errors[_norm(msg)[:140]] += 1
    return {
        "tracebacks": tracebacks,
        "task_exceptions": dict(unexpected.most_common()),
        "error_lines": dict(errors.most_common(15)),
    }


def stuck_report(run: Run) -> dict[str, Any]:
    """What is not finished: states per step, ages, queue lengths, workers."""
    import psycopg
    import redis

    out: dict[str, Any] = {}
    try:
        with psycopg.connect(run.db_url, connect_timeout=3, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT state, model, stage, round, count(*), "
                "round(extract(epoch FROM now() - min(enqueued_at))::numeric, 1) "
                "FROM prompts WHERE state NOT IN ('done', 'failed') GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"
            ).fetchall()
            out["open_steps"] = [
                {
                    "state": s,
                    "model": m,
                    "stage": st,
                    "round": r,
                    "count": n,
                    "oldest_enqueued_s": float(a or 0),
                }
                for s, m, st, r, n, a in rows
            ]
            sample = conn.execute(
                "SELECT doc_key, state, model, stage, enqueued_at FROM prompts "
                "WHERE state NOT IN ('done', 'failed') ORDER BY id LIMIT 5"
            ).fetchall()
            out["open_sample"] = [f"{d} {s} at {m}/{st} since {e}" for d, s, m, st, e in sample]
    except psycopg.Error as exc:
        out["postgres"] = f"unreachable: {exc}"
    try:
        client = redis.Redis.from_url(run.broker_url, socket_timeout=3, socket_connect_timeout=3)
        out["redis"] = {f"herd.{m}": int(client.llen(f"herd.{m}")) for m in MODELS}  # type: ignore[arg-type]
        out["redis"]["unacked"] = int(client.hlen("unacked"))  # type: ignore[arg-type]
        client.close()
    except redis.RedisError as exc:
        out["redis"] = f"unreachable: {exc}"
    out["workers_alive"] = {m: p.poll() is None for m, p in run.workers.items()}
    return out


# ---------------------------------------------------------------------------------------------- reporting


def print_report(res: dict[str, Any], plan: Plan, say: Callable[[str], None]) -> None:
    say("\n== faults (seconds after submit; prompts neither done nor failed at that moment) ==")
    for ev in sorted(res["events"], key=lambda e: e["fired_at"] if e["fired_at"] is not None else 1e9):
        when = "never" if ev["fired_at"] is None else f"t={ev['fired_at']:6.1f}s"
        open_ = "" if ev["open_prompts"] is None else f" [{ev['open_prompts']} open]"
        say(f"  {when}  {ev['action']:<15}{ev['note']}{open_}")
    if res["unexpected_exits"]:
        say("  workers that exited by themselves (restarted): " + "; ".join(res["unexpected_exits"]))
    say(f"  worker starts per model: {res['worker_starts']}")
    if not res["drained"]:
        say(f"\n== NOT DRAINED after {plan.deadline_s:.0f}s: what is stuck ==")
        say(json.dumps(res["stuck"], indent=2, default=str))
    led, calls, logs = res["ledger"], res["calls"], res["logs"]
    say("\n== figures ==")
    say(
        f"  prompts: {plan.prompts}; states at the end: {led['states']}; "
        f"finals by model: {led['finals_by_model']}"
    )
    say(f"  prompts lost (neither done nor failed): {res['lost']}")
    say(
        f"  most prompts queued at once (polled every 0.5s): {res['max_queued']} "
        f"(HERD_DISPATCH_WINDOW {plan.dispatch_window})"
    )
    say(f"  duplicate finals (prompt with > 1 final): {led['duplicate_finals']}")
    say(f"  duplicate attempts (> 1 per prompt, model, stage, round): {led['duplicate_attempts']}")
    say(
        f"  done without a final / final on a prompt not done: {led['done_without_final']} / "
        f"{led['final_not_done']}"
    )
    say(
        f"  model calls: {calls['calls_total']} received by the doubles {calls['calls']}, "
        f"{calls['attempts_total']} attempts recorded {calls['attempts']}"
    )
    say(
        f"  model calls beyond one per step: {calls['calls_beyond_one_per_step']}; of these, retries "
        f"recorded on the attempts: {calls['retries_total']} ({calls['retries_not_reaching_endpoint']} "
        f"never reached a double: endpoint down); beyond the step and its recorded retries (wasted GPU): "
        f"{calls['calls_beyond_step_and_retries']}, {calls['calls_for_steps_without_attempt']} of them for "
        f"steps with no attempt recorded"
    )
    for model, drawn in calls["faults_drawn"].items():
        say(f"    faults drawn by {model}'s double: {drawn}")
    say(
        f"  failed prompts: {led['states'].get('failed', 0)}; "
        f"without a reason: {led['failed_without_reason']}"
    )
    for reason, n in led["failure_reasons"].items():
        say(f"    {n:5d}  {reason}")
    say(f"  worker logs: {logs['tracebacks']} tracebacks; task exceptions (Celery 'raised unexpected'):")
    for exc, n in logs["task_exceptions"].items():
        say(f"    {n:5d}  {exc}")
    if logs["error_lines"]:
        say("  other ERROR/CRITICAL log lines (top 15):")
        for line, n in logs["error_lines"].items():
            say(f"    {n:5d}  {line}")
    say(
        f"  last fault ended at t={res['last_fault_s']:.1f}s; job drained at "
        + (f"t={res['drained_at_s']:.1f}s" if res["drained_at_s"] is not None else "never")
    )
    if res["drain_after_last_fault_s"] is not None:
        say(
            f"  time from the last fault to a drained job: {res['drain_after_last_fault_s']:.1f}s "
            f"(stale period {plan.stale_after_s:.0f}s; "
            f"{res['open_at_last_fault']} prompts open at the last fault)"
        )
    say("  the last prompts to finish (attempts: model status retries start..end, seconds after submit):")
    for line in led["last_finished"]:
        say(f"    {line}")
    say("\n== goals ==")
    for goal, ok in res["goals"].items():
        say(f"  {'PASS' if ok else 'FAIL'}  {goal}")


def run_suite(plan: Plan, *, keep: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="herd-faults-"))
    run = Run(plan, home, say)
    events = schedule(plan)
    try:
        say(
            f"fault suite: {plan.prompts} prompts, seed {plan.seed}; "
            f"HERD_STALE_AFTER_S={plan.stale_after_s:g}, "
            f"HERD_VISIBILITY_TIMEOUT_S={plan.visibility_timeout_s}, "
            f"HERD_PUMP_INTERVAL_S={plan.pump_interval_s:g}, "
            f"HERD_DISPATCH_WINDOW={plan.dispatch_window} (short on purpose, so the run drains in minutes)"
        )
        say(
            f"  doubles: latency {plan.latency_s}s, faults per call {plan.faults}, hangs {plan.hang_s}s; "
            f"models: timeout {plan.timeout_s}s, retries {plan.retries} (backoff {plan.backoff_s}s..."
            f"{plan.backoff_max_s}s), max_in_flight {plan.max_in_flight}"
        )
        run.start_services()
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
            env=run.child_env(),
            cwd=run.work,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if submit.returncode != 0:
            raise RuntimeError(f"herd submit failed ({submit.returncode}):\n{submit.stderr}")
        run.t0, t0_wall = time.monotonic(), time.time()
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
            now = time.monotonic() - run.t0
            due = [ev for ev in timed if (ev.at or 0.0) <= now]
            due += [ev for ev in waiting if (ev.after or 0.0) * plan.prompts <= finished]
            for ev in due:
                (timed if ev in timed else waiting).remove(ev)
                ev.open_prompts = plan.prompts - finished
                perform(run, ev)
                ev.fired_at = now = time.monotonic() - run.t0
                say(f"  t={now:6.1f}s {ev.note} [{ev.open_prompts} open]")
                if ev.down_s:
                    restart = Event("start-" + ev.action.split("-", 1)[1], ev.target, at=now + ev.down_s)
                    timed.append(restart)
                    events.append(restart)
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
        stuck = stuck_report(run) if drained_at is None else {}
        fired = [ev for ev in events if ev.fired_at is not None]
        last = max(fired, key=lambda ev: ev.fired_at or 0.0, default=None)
        last_fault = last.fired_at if last and last.fired_at is not None else 0.0
        open_at_last = last.open_prompts if last else None
        run.procs.stop_all()  # workers and doubles stop before the figures are read: nothing moves any more
        ledger = ledger_figures(run.db_url, t0_wall)
        calls = call_figures(run.work, ledger.pop("attempt_rows"))
        logs = log_figures(run.worker_logs)
        lost = plan.prompts - ledger["states"].get("done", 0) - ledger["states"].get("failed", 0)
        drain_after = None if drained_at is None else drained_at - last_fault
        res: dict[str, Any] = {
            "plan": asdict(plan),
            "events": [asdict(ev) for ev in events],
            "unexpected_exits": run.unexpected_exits,
            "worker_starts": dict(run.worker_starts),
            "drained": drained_at is not None,
            "drained_at_s": drained_at,
            "last_fault_s": last_fault,
            "open_at_last_fault": open_at_last,
            "drain_after_last_fault_s": drain_after,
            "lost": lost,
            "max_queued": max_queued,
            "ledger": ledger,
            "calls": calls,
            "logs": logs,
            "stuck": stuck,
        }
        res["goals"] = {
            "0 prompts lost": lost == 0,
            "0 duplicate finals": ledger["duplicate_finals"] == 0 and ledger["duplicate_attempts"] == 0,
            "every failure with a reason": ledger["failed_without_reason"] == 0,
            "drained within one stale period of the last fault": drain_after is not None
            and drain_after <= plan.stale_after_s,
            "every fault hit the job while prompts were open": all(
                (ev.open_prompts or 0) > 0 for ev in events if ev.action.startswith("kill")
            ),
            "every fault fired": all(ev.fired_at is not None for ev in events),
        }
        print_report(res, plan, say)
        return res
    finally:
        run.close()
        if keep:
            say(f"kept: {home} (work/ holds the herd file, worker and double logs, call logs)")
        else:
            shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the CI version: 150 prompts, shorter faults")
    parser.add_argument("--prompts", type=int, help="default 1000 (150 with --short)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, help="seconds per successful model call in the doubles")
    parser.add_argument("--deadline", type=float, help="seconds after submit before reporting what is stuck")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep HERD_HOME with every log")
    args = parser.parse_args(argv)
    plan = replace(SHORT) if args.short else Plan()
    plan.seed = args.seed
    if args.prompts is not None:
        plan.prompts = args.prompts
    if args.latency is not None:
        plan.latency_s = args.latency
    if args.deadline is not None:
        plan.deadline_s = args.deadline

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # stop everything on SIGTERM too, through the finally blocks
    t = time.monotonic()
    try:
        res = run_suite(plan, keep=args.keep, say=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    print(f"\nwhole run (start to stop of every process): {time.monotonic() - t:.1f}s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    if not res["drained"]:
        return 2
    return 0 if all(res["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

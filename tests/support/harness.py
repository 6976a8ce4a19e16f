"""What tests and benchmarks share (a plain module, not a conftest, so `benchmarks/` imports it too):
where the services are and how to empty them, a herd file on the endpoint doubles, the environment
Herd's processes run with, CLI and worker processes started the way a user starts them, and waits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery
from psycopg import sql

from herd.embedded.servers import ensure_postgres, ensure_redis, stop_all
from herd.ledger.db import migrate
from tests.support.endpoint import EndpointDouble
from tests.support.processes import Procs, ready_line, wait_for_log

REPO = Path(__file__).resolve().parents[2]
# Every reset empties these; TRUNCATE ... CASCADE also empties every table with a foreign key into
# them (prompts, attempts, finals, scores, policies, routers, cost shares, rollups).
# tests/unit/test_harness.py checks that no ledger table is out of reach.
TABLES = (
    "finals",
    "attempts",
    "prompts",
    "jobs",
    "cost_share_marks",
    "cost_share_cuts",
    "cost_share_late",
    "cost_share_resync",
    "cost_rollup_jobs",
    "api_batches",
    "api_file_chunks",
    "api_files",
    "api_keys",
)


@dataclass(frozen=True)
class Services:
    """A migrated Postgres and a Redis. `embedded`: started under `home` by `services()` (and stopped by
    it), not taken from HERD_DATABASE_URL / HERD_BROKER_URL; `started_s`: how long starting them took."""

    database_url: str
    broker_url: str
    home: Path
    embedded: bool = False
    started_s: float = 0.0


@contextmanager
def services(home: Path, *, from_env: bool = True) -> Iterator[Services]:
    """HERD_DATABASE_URL / HERD_BROKER_URL when set (and `from_env`), else throwaway embedded servers
    under `home` (herd/embedded/servers.py), stopped on exit; migrated to the latest revision either way.
    Never point them at data you need: `reset` truncates the ledger and flushes the Redis db."""
    db_url = os.environ.get("HERD_DATABASE_URL") if from_env else None
    broker = os.environ.get("HERD_BROKER_URL") if from_env else None
    embedded = not (db_url and broker)
    started = time.perf_counter()
    try:
        db_url = db_url or ensure_postgres(home)
        broker = broker or ensure_redis(home)
        started_s = time.perf_counter() - started if embedded else 0.0
        migrate(db_url)
        yield Services(db_url, broker, home, embedded, started_s)
    finally:
        if embedded:
            stop_all(home)


def truncate(conn: psycopg.Connection) -> None:
    """Empty every ledger table (the schema and its migrations stay)."""
    names = sql.SQL(", ").join(sql.Identifier(table) for table in TABLES)
    conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))


def reset(services: Services) -> None:
    """An empty ledger and an empty broker db."""
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        truncate(conn)
    client = redis.Redis.from_url(services.broker_url)
    try:
        client.flushdb()
    finally:
        client.close()


def herd_env(services: Services, herd_file: Path | None, **extra: str) -> dict[str, str]:
    """The environment Herd's CLI and workers run with: this process's without its HERD_ variables (a
    developer's shell must not change a run), the services, the herd file (None: Herd's default),
    `extra` (HERD_ settings, COLUMNS...) and this checkout first on PYTHONPATH (for
    `python -m tests.support.endpoint` and `-m benchmarks...`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}
    env.update(
        {
            "HERD_DATABASE_URL": services.database_url,
            "HERD_BROKER_URL": services.broker_url,
            "HERD_HOME": str(services.home),
        }
    )
    if herd_file is not None:
        env["HERD_HERD_FILE"] = str(herd_file)
    return with_pythonpath({**env, **extra}, [REPO])


def with_pythonpath(env: Mapping[str, str], first: Sequence[Path]) -> dict[str, str]:
    """`env` with `first` ahead of its PYTHONPATH (no empty entry: that would put the cwd on sys.path)."""
    parts = [str(p) for p in first] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(parts)}


# ------------------------------------------------------------------------------------------- herd files

# One tier per wire protocol Herd speaks: (protocol, prompt_mode ("": the default, chat), gpus).
TIERS: dict[str, tuple[str, str, str]] = {
    "small": ("openai", "", "{type: L4, count: 1, usd_per_hour: 0.8}"),
    "medium": ("tgi", "completion", "{type: A10G, count: 1, usd_per_hour: 1.2}"),
    "large": ("openai", "completion", "{type: A100, count: 2, usd_per_hour: 3.0}"),
}


def herd_yaml(
    endpoints: EndpointDouble | Mapping[str, str | Sequence[str]],
    *,
    retries: int = 2,
    timeout_s: float = 5.0,
    backoff_s: float = 0.05,
    backoff_max_s: float = 0.2,
    max_in_flight: int = 4,
) -> str:
    """A herd on endpoint doubles: small (OpenAI chat) -> medium (TGI) -> large (OpenAI completions),
    each escalating to the next when its first-token margin is under 0.5; task `qa`.

    `endpoints`: a double serving every model, or each model's base URL(s) on a double
    (`<url>/m/<model>`; `/v1` is added for OpenAI), its keys a prefix of the three tiers in order (one
    model: a herd with no escalation). Several URLs for a model are used round-robin."""
    if isinstance(endpoints, EndpointDouble):
        endpoints = {model: endpoints.model_url(model) for model in TIERS}
    models = list(endpoints)
    if models != list(TIERS)[: len(models)] or not models:
        raise ValueError(f"models must be a prefix of {list(TIERS)}, not {models}")
    lines = ["models:"]
    for i, model in enumerate(models):
        protocol, prompt_mode, gpus = TIERS[model]
        urls = [endpoints[model]] if isinstance(endpoints[model], str) else list(endpoints[model])
        urls = [f"{url}/v1" if protocol == "openai" else str(url) for url in urls]
        lines += [
            f"  {model}:",
            f"    protocol: {protocol}",
            f"    endpoints: {urls[0] if len(urls) == 1 else '[' + ', '.join(urls) + ']'}",
            *([f"    prompt_mode: {prompt_mode}"] if prompt_mode else []),
            f"    max_in_flight: {max_in_flight}",
            f"    timeout_s: {timeout_s}",
            f"    retries: {{max: {retries}, backoff_s: {backoff_s}, backoff_max_s: {backoff_max_s}}}",
            f"    gpus: {gpus}",
        ]
        if i + 1 < len(models):
            rule = f"next: {models[i + 1]}, measure: first_token_margin, threshold: 0.5"
            lines.append(f"    escalation: {{{rule}}}")
    lines += ["tasks:", "  qa:", "    kind: qa", '    completion: "Q: {text}\\nA:"', ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- processes


def worker_command(model: str, loglevel: str = "info") -> list[str]:
    """`herd worker` for one model, as a user starts it."""
    return [sys.executable, "-m", "herd", "worker", "--model", model, "--loglevel", loglevel]


def wait_worker_ready(
    proc: subprocess.Popen[Any],
    log: Path,
    model: str,
    what: str,
    *,
    broker_url: str | None = None,
    timeout: float = 60,
) -> None:
    """Until the worker logs ` ready.` (loglevel info) or, given `broker_url`, answers a control ping
    (any loglevel); RuntimeError with the log's tail if it exits first or `timeout` seconds pass."""
    if broker_url is None:
        wait_for_log(proc, log, " ready.", what, timeout=timeout)
        return
    # Any app on the same broker reaches every worker's pidbox; JSON, as Herd's workers accept.
    app = Celery("herd-harness", broker=broker_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    name = f"{model}@{socket.gethostname()}"

    def answers() -> bool:
        return bool(app.control.ping(destination=[name], timeout=0.5))

    try:
        wait_for_log(proc, log, " ready.", what, timeout=timeout, probe=answers)
    finally:
        app.close()


def start_worker(
    procs: Procs,
    env: dict[str, str],
    model: str,
    log: Path,
    *,
    loglevel: str = "info",
    broker_url: str | None = None,
    timeout: float = 60,
) -> subprocess.Popen[Any]:
    """`herd worker --model <model>` with its output in `log`, once it is ready to consume."""
    proc = procs.start(worker_command(model, loglevel), env=env, log=log)
    wait_worker_ready(proc, log, model, f"worker {model}", broker_url=broker_url, timeout=timeout)
    return proc


@dataclass(frozen=True)
class DoubleProcess:
    """An endpoint double in a process of its own (`python -m tests.support.endpoint` or `.faulty`)."""

    proc: subprocess.Popen[Any]
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def model_url(self, model: str) -> str:
        return f"{self.url}/m/{model}"

    def script(self, script: Mapping[str, Any]) -> None:
        """POST /_script: `{"rules": [...], "default": {...}}` (tests/support/endpoint.py)."""
        request = urllib.request.Request(
            f"{self.url}/_script",
            data=json.dumps(script).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def total_calls(self) -> int:
        with urllib.request.urlopen(f"{self.url}/_calls", timeout=30) as response:
            return int(json.load(response)["total"])


def start_double(
    procs: Procs,
    env: Mapping[str, str] | None = None,
    *,
    module: str = "tests.support.endpoint",
    args: Sequence[str] = (),
    port: int = 0,
    errlog: Path | None = None,
) -> DoubleProcess:
    """An endpoint double process on `port` (0: a free one), once it listens; `env` (default: this
    process's) with this checkout on PYTHONPATH."""
    cmd = [sys.executable, "-m", module, "--port", str(port), *args]
    env = with_pythonpath(os.environ if env is None else env, [REPO])
    proc = procs.start(cmd, env=env, stdout=subprocess.PIPE, errlog=errlog)
    return DoubleProcess(proc, ready_line(proc, f"endpoint double ({module})"))


# A chat task on the same three tiers (small answers in chat mode, medium (TGI) and large in completion
# mode get a transcript), and the route name `herd` for it: OpenAI batch requests (docs/batch-api.md).
CHAT_TASK = """\
  chat:
    kind: chat
routes:
  herd: chat
"""


def chat_herd_yaml(double: EndpointDouble, *, retries: int = 2, timeout_s: float = 5.0) -> str:
    """`herd_yaml` with the chat task and its route."""
    return herd_yaml(double, retries=retries, timeout_s=timeout_s) + CHAT_TASK


@dataclass
class Herd:
    """A herd file plus the environment its CLI commands and workers run with."""

    services: Services
    path: Path
    env: dict[str, str]
    procs: Procs = field(init=False)

    def __post_init__(self) -> None:
        self.procs = Procs(cwd=self.path.parent)

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "herd", *args],
            env=self.env,
            cwd=self.path.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"herd {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def start_worker(self, model: str) -> subprocess.Popen[Any]:
        log = self.path.parent / f"worker-{model}-{len(self.procs.procs)}.log"
        try:
            return start_worker(self.procs, self.env, model, log)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from exc

    def stop(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
        self.procs.stop(proc, sig)

    def stop_all(self) -> None:
        self.procs.stop_all()


def wait_for(
    conn: psycopg.Connection, job: str, *, timeout: float = 60, documents_only: bool = False
) -> dict[str, int]:
    """Wait until every prompt of `job` is done or failed; return the counts per state.
    `documents_only`: count documents, not the chunk prompts of long ones (they have a parent)."""
    deadline = time.monotonic() + timeout
    documents = " AND p.parent_id IS NULL" if documents_only else ""
    while True:
        rows = conn.execute(
            "SELECT p.state, count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id "
            f"WHERE j.name = %s{documents} GROUP BY p.state",
            (job,),
        ).fetchall()
        states = {state: int(n) for state, n in rows}
        if states and set(states) <= {"done", "failed"}:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job} did not finish in {timeout}s: {states}")
        time.sleep(0.2)

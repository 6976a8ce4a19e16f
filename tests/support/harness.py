"""What tests and benchmarks share (never imported from conftest): where the services are, a herd
file on the endpoint double, CLI and worker processes started the way a user starts them, and waits."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.endpoint import EndpointDouble
from tests.support.processes import Procs, wait_for_log

REPO = Path(__file__).resolve().parents[2]
TABLES = (
    "finals, attempts, prompts, jobs, cost_share_marks, cost_share_cuts, cost_share_late, cost_rollup_jobs, "
    "api_batches, api_file_chunks, api_files, api_keys"
)


@dataclass
class Services:
    database_url: str
    broker_url: str
    home: Path


def herd_yaml(double: EndpointDouble, *, retries: int = 2, timeout_s: float = 5.0) -> str:
    """A three-tier herd on the double: small (OpenAI chat) -> medium (TGI) -> large (OpenAI completions)."""
    return f"""\
models:
  small:
    protocol: openai
    endpoints: {double.model_url("small")}/v1
    max_in_flight: 4
    timeout_s: {timeout_s}
    retries: {{max: {retries}, backoff_s: 0.05, backoff_max_s: 0.2}}
    gpus: {{type: L4, count: 1, usd_per_hour: 0.8}}
    escalation: {{next: medium, measure: first_token_margin, threshold: 0.5}}
  medium:
    protocol: tgi
    endpoints: {double.model_url("medium")}
    prompt_mode: completion
    max_in_flight: 4
    timeout_s: {timeout_s}
    retries: {{max: {retries}, backoff_s: 0.05, backoff_max_s: 0.2}}
    gpus: {{type: A10G, count: 1, usd_per_hour: 1.2}}
    escalation: {{next: large, measure: first_token_margin, threshold: 0.5}}
  large:
    protocol: openai
    endpoints: {double.model_url("large")}/v1
    prompt_mode: completion
    max_in_flight: 4
    timeout_s: {timeout_s}
    retries: {{max: {retries}, backoff_s: 0.05, backoff_max_s: 0.2}}
    gpus: {{type: A100, count: 2, usd_per_hour: 3.0}}
tasks:
  qa:
    kind: qa
    completion: "Q: {{text}}\\nA:"
"""


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

    def start_worker(self, model: str) -> subprocess.Popen[bytes]:
        log = self.path.parent / f"worker-{model}-{len(self.procs.procs)}.log"
        cmd = [sys.executable, "-m", "herd", "worker", "--model", model, "--loglevel", "info"]
        proc = self.procs.start(cmd, env=self.env, log=log)
        try:
            wait_for_log(proc, log, " ready.", f"worker {model}")
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from exc
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
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

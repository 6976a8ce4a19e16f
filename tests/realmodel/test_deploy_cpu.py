"""docker-compose.yml's `cpu` profile model servers, run natively with their argv (port mapped):
llama.cpp's server on the PyPI-shipped model answers on /v1/models, as its healthcheck asks."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from tests.support.deploy import compose_commands, native_argv, wait_http
from tests.support.processes import Procs

SERVERS = [c for c in compose_commands() if c.role == "model-server"]


def test_the_cpu_profile_has_a_server_per_cpu_model() -> None:
    assert {c.argv[3] for c in SERVERS} == {"smollm2", "gemma3"}


@pytest.mark.parametrize("command", [c for c in SERVERS if c.argv[3] == "smollm2"], ids=lambda c: c.id)
def test_cpu_model_server_runs_natively(command, tmp_path) -> None:  # type: ignore[no-untyped-def]
    argv, port = native_argv(command.argv, tmp_path)
    procs = Procs(cwd=tmp_path)
    log = tmp_path / "server.log"
    try:
        proc = procs.start(argv, env={**os.environ, "HERD_HOME": str(tmp_path / "home")}, log=log)
        url = f"http://127.0.0.1:{port}/v1/models"
        wait_http(url, proc, log, timeout=120)
        with urllib.request.urlopen(url, timeout=10) as response:
            models = json.load(response)
        assert models["data"] and "SmolLM2" in models["data"][0]["id"]
    finally:
        procs.stop_all()

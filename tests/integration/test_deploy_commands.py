"""Every `herd` command of docker-compose.yml and the Kubernetes manifests runs here natively, with the
same argv (tests/support/deploy.py says what is mapped), against the local Postgres and Redis."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.support.deploy import (
    BIN,
    ContainerCommand,
    compose,
    compose_commands,
    herd_file_on_double,
    http_status,
    k8s_commands,
    native_argv,
    wait_http,
)
from tests.support.harness import REPO, Services
from tests.support.processes import Procs, wait_for_log

FLOWER_AUTH = "ops:s3cret-for-tests"
# Stand-in paths for the k8s herd file; the real one is written per test from the rendered ConfigMap.
K8S_HERD = REPO / "infra" / "herd.example.yaml"

COMMANDS = [c for c in [*compose_commands(), *k8s_commands(K8S_HERD)] if c.role != "model-server"]


def test_the_manifests_have_every_role() -> None:
    roles = {(c.source, c.role) for c in COMMANDS}
    roles_ = ("migrate", "worker", "housekeeper", "flower", "metrics", "serve")
    assert roles == {(s, r) for s in ("compose", "k8s") for r in roles_}


@pytest.fixture
def fresh_database(services: Services) -> Iterator[str]:
    """An empty database on the test server, dropped afterwards: what `migrate` meets on a new host."""
    name = f"herd_deploy_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(services.database_url)._replace(path=f"/{name}").geturl()
    yield url
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def native_env(services: Services, herd_file: Path, database_url: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HERD_DATABASE_URL": database_url,
        "HERD_BROKER_URL": services.broker_url,
        "HERD_HERD_FILE": str(herd_file),
        "HERD_HOME": str(home),
        "FLOWER_BASIC_AUTH": FLOWER_AUTH,
        "HERD_PUMP_INTERVAL_S": "1",
    }


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_migrate_runs_and_a_worker_waits_for_it(services, fresh_database, double, tmp_path, source) -> None:
    commands = [c for c in COMMANDS if c.source == source]
    migrate = next(c for c in commands if c.role == "migrate")
    worker = next(c for c in commands if c.role == "worker")
    assert "--wait-for-schema" in worker.argv  # it must not die before the migration ran
    herd_file = herd_file_on_double(worker.herd_file, double, tmp_path / "herd.yaml")
    env = native_env(services, herd_file, fresh_database, tmp_path / "home")
    procs = Procs(cwd=tmp_path)
    try:
        argv, _ = native_argv(worker.argv, tmp_path)
        log = tmp_path / "worker.log"
        proc = procs.start(argv, env=env, log=log)
        time.sleep(3)
        assert proc.poll() is None, log.read_text()
        assert " ready." not in log.read_text(), "the worker consumed before the schema existed"

        argv, _ = native_argv(migrate.argv, tmp_path)
        done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "database schema is up to date" in done.stderr
        wait_for_log(proc, log, " ready.", f"{worker.id} after migrate", timeout=60)
    finally:
        procs.stop_all()


def _run(command: ContainerCommand, services: Services, double, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    herd_file = herd_file_on_double(command.herd_file, double, tmp_path / "herd.yaml")
    env = native_env(services, herd_file, services.database_url, tmp_path / "home")
    argv, port = native_argv(command.argv, tmp_path)
    procs = Procs(cwd=tmp_path)
    log = tmp_path / f"{command.id}.log"
    try:
        if command.role == "migrate":
            done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return
        proc = procs.start(argv, env=env, log=log)
        if command.role == "worker":
            wait_for_log(proc, log, " ready.", command.id, timeout=60)
            if command.source == "compose":
                _compose_worker_healthcheck(command, env, tmp_path)
        elif command.role == "flower":
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthcheck", proc, log)
            assert http_status(f"{base}/healthcheck") == 200  # what the healthcheck/probe asks
            assert http_status(f"{base}/broker") == 401
            token = base64.b64encode(FLOWER_AUTH.encode()).decode()
            assert http_status(f"{base}/broker", {"Authorization": f"Basic {token}"}) == 200
        elif command.role == "serve":
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/health", proc, log)
            assert http_status(f"{base}/health") == 200  # what the healthcheck/probes ask
            assert http_status(f"{base}/v1/batches") == 401  # everything else needs a key
        elif command.role == "housekeeper":
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/health", proc, log)
            assert http_status(f"{base}/health") == 200  # what the healthcheck/probes ask
            with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
                assert "herd_housekeeper_leader" in response.read().decode()
        elif command.role == "metrics":
            url = f"http://127.0.0.1:{port}/metrics"
            wait_http(url, proc, log)
            with urllib.request.urlopen(url, timeout=30) as response:
                body = response.read().decode()
            assert 'herd_up{source="postgres"} 1.0' in body and 'herd_up{source="redis"} 1.0' in body
        else:
            raise AssertionError(f"unexpected role {command.role}")
        assert proc.poll() is None, log.read_text()
    finally:
        procs.stop_all()


def _compose_worker_healthcheck(command: ContainerCommand, env: dict[str, str], tmp_path: Path) -> None:
    """The worker service's healthcheck, as its container shell would run it ($$ is compose's $)."""
    service = compose()["services"][command.name]
    kind, script = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    health_env = {**env, **{k: str(v) for k, v in service["environment"].items() if k == "WORKER_MODEL"}}
    done = subprocess.run(
        ["sh", "-c", script.replace("$$", "$")],
        env=health_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"healthcheck of {command.name} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_container_command_runs_natively(command: ContainerCommand, services, db, double, tmp_path) -> None:
    if command.source == "k8s":
        from tests.support.deploy import k8s_herd_file

        command = ContainerCommand(command.source, command.name, command.argv, k8s_herd_file(tmp_path))
    _run(command, services, double, tmp_path)


def test_herd_ps_and_down_work_with_the_image_environment(services, tmp_path) -> None:
    """The image has no embedded services running: `herd ps` lists them as stopped, `herd down` stops
    nothing, both exit 0 (a non-root user's fresh HERD_HOME)."""
    env = native_env(services, REPO / "infra" / "herd.compose.yaml", services.database_url, tmp_path / "home")
    for args in (["ps"], ["down"]):
        cmd = [str(BIN / "herd"), *args]
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

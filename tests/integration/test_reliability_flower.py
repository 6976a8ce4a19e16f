"""`herd flower`: every model's queue is listed, also one no worker consumes; no dashboard open to the
network without a login."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from herd.monitor import FlowerConfigError, flower_args, is_loopback
from tests.integration.test_cascade import CONFIDENT, UNSURE, jsonl
from tests.support.harness import wait_for


def test_flower_defaults_to_loopback() -> None:
    assert flower_args(["--port=5555"], {}) == ["--port=5555", "--address=127.0.0.1"]
    assert flower_args(["--address=127.0.0.1"], {}) == ["--address=127.0.0.1"]
    assert flower_args(["--address", "::1"], {}) == ["--address", "::1"]
    assert flower_args(["--port=1"], {"FLOWER_ADDRESS": "localhost"}) == ["--port=1"]
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(a) for a in ("", "0.0.0.0", "::", "10.0.0.5", "flower.internal"))


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--address=0.0.0.0"], {}), (["--address="], {}), (["--port=5555"], {"FLOWER_ADDRESS": "10.1.2.3"})],
)
def test_flower_refuses_a_network_address_without_credentials(args, env) -> None:
    with pytest.raises(FlowerConfigError, match="FLOWER_BASIC_AUTH"):
        flower_args(args, env)
    assert flower_args(args, {**env, "FLOWER_BASIC_AUTH": "ops:secret"}) == args
    assert flower_args(args, env, allow_unauthenticated=True) == args


def test_flower_credentials_only_from_the_environment() -> None:
    for args in (["--basic_auth=ops:secret"], ["--basic-auth", "ops:secret", "--address=0.0.0.0"]):
        with pytest.raises(FlowerConfigError, match="not on the command line"):
            flower_args(args, {})


def test_herd_flower_refuses_to_start_open_to_the_network(make_herd) -> None:
    herd = make_herd()
    result = herd.cli("flower", "--address=0.0.0.0", "--port=1", check=False, timeout=60)
    assert result.returncode == 2
    assert "Flower would listen on 0.0.0.0 with no login" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_flower_lists_the_queue_no_worker_consumes(make_herd, db, double, tmp_path) -> None:
    double.script(
        [
            {"model": "small", "match": "", "text": "unsure", "first": UNSURE},
            {"model": "medium", "match": "", "text": "sure", "first": CONFIDENT},
        ]
    )
    herd = make_herd()
    herd.start_worker("small")  # medium's workers are all down: its backlog is what matters
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "f.jsonl", [{"id": i, "text": f"q {i}"} for i in range(4)])),
        "--job",
        "f",
        "--task",
        "qa",
    )
    deadline = time.monotonic() + 30
    while db.execute("SELECT count(*) FROM prompts WHERE model = 'medium'").fetchone() != (4,):
        assert time.monotonic() < deadline, "the prompts never escalated"
        time.sleep(0.2)
    port = free_port()
    env = {**herd.env, "FLOWER_UNAUTHENTICATED_API": "1"}  # only so the test can read the JSON API
    with (tmp_path / "flower.log").open("wb") as log:  # the child holds its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "herd", "flower", f"--port={port}"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        queues: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/api/queues/length"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.load(response)
                queues = {q["name"]: q["messages"] for q in body["active_queues"]}
                if queues.get("herd.medium") == 4:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()
            time.sleep(0.5)
        assert queues == {"herd.small": 0, "herd.medium": 4, "herd.large": 0}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    herd.start_worker("medium")
    assert wait_for(db, "f") == {"done": 4}

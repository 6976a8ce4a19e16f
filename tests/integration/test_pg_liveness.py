"""Herd's long-lived Postgres connections (herd/ledger/db.py `connection_options`): the worker's pool,
the API's pool and the leader lock open theirs with the liveness options, and under a real partition
a statement sent to a Postgres that went silent fails the connection instead of blocking its thread
for the kernel's ~15 minutes of retransmissions.

The client runs in a network namespace of its own, reaching the test's Postgres through `socat` on a
veth pair; the partition takes the root side of that pair down, so every packet between them is
dropped without a RST or ICMP, while both sockets stay open. (A forwarder that merely stops copying
bytes is no partition for this: its kernel still acknowledges the statement and answers keepalives.)
Needs root and iproute2, like the fault suite's partition (benchmarks/_lib/faults_netns.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from herd.api.server import build
from herd.housekeeping.leader import LeaderLock
from herd.ledger.db import LIVENESS_OPTIONS
from herd.settings import get_settings
from herd_workers.context import get_context
from tests.support.endpoint import EndpointDouble
from tests.support.harness import Services, herd_env, herd_yaml

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("socat") is None,
    reason="a partition needs root, iproute2 and socat",
)

# Generous beside the 25 s TCP user timeout: the machine may be busy. Without the options the
# statement would wait for the kernel's retransmissions, about 15 minutes.
BOUND_S = 180

# Runs in the namespace: one pooled connection, as a worker's pool gives out, one statement before
# the partition and one during it.
CLIENT = """
import sys
import psycopg
from psycopg_pool import ConnectionPool
from herd.ledger.db import connection_options

options = connection_options(autocommit=True)
pool = ConnectionPool(sys.argv[1], min_size=1, max_size=1, kwargs=options, open=True)
with pool.connection() as conn:
    conn.execute("SELECT 1")
print("ready", flush=True)
sys.stdin.readline()
with pool.connection() as conn:
    try:
        conn.execute("SELECT 1")
        print("answered", flush=True)
    except psycopg.OperationalError as exc:
        print("failed", type(exc).__name__, flush=True)
pool.close(timeout=1)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Lab:
    namespace: str
    root_link: str
    root_ip: str

    def partition(self) -> None:
        _ip("link", "set", self.root_link, "down")


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = f"hpg{os.getpid()}"
    subnet = f"10.79.{os.getpid() % 250}"
    ns, root_link, ns_link = tag, f"{tag}a", f"{tag}b"
    try:
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", root_link, "type", "veth", "peer", "name", ns_link)
        _ip("link", "set", ns_link, "netns", ns)
        _ip("addr", "add", f"{subnet}.1/30", "dev", root_link)
        _ip("link", "set", root_link, "up")
        _ip("-n", ns, "addr", "add", f"{subnet}.2/30", "dev", ns_link)
        _ip("-n", ns, "link", "set", ns_link, "up")
        yield Lab(ns, root_link, f"{subnet}.1")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", root_link], capture_output=True, timeout=30)


@pytest.fixture
def forwarded_url(lab: Lab, services: Services) -> Iterator[str]:
    """The test database's URL as the namespace reaches it: `socat` on the lab's root address."""
    params = conninfo_to_dict(services.database_url)
    with socket.socket() as probe:
        probe.bind((lab.root_ip, 0))
        port = probe.getsockname()[1]
    forwarder = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{port},bind={lab.root_ip},reuseaddr,fork",
            f"TCP:{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex((lab.root_ip, port)) == 0

    try:
        deadline = time.monotonic() + 30
        while not listening():
            assert time.monotonic() < deadline and forwarder.poll() is None, "socat did not start"
            time.sleep(0.1)
        yield make_conninfo(services.database_url, host=lab.root_ip, port=port)
    finally:
        forwarder.terminate()
        forwarder.wait(timeout=30)


@needs_netns
def test_a_pooled_statement_sent_into_a_partition_fails_instead_of_hanging(
    lab: Lab, forwarded_url: str, db: psycopg.Connection
) -> None:
    client = subprocess.Popen(
        ["ip", "netns", "exec", lab.namespace, sys.executable, "-c", CLIENT, forwarded_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        first = client.stdout.readline().strip()
        assert first == "ready", client.stderr.read() if client.stderr else first
        lab.partition()
        client.stdin.write("go\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=BOUND_S)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=30)
    assert out.strip() == "failed OperationalError", err


def _liveness_of(conn: psycopg.Connection) -> dict[str, str]:
    """The liveness parameters libpq opened `conn` with (as strings, libpq's form)."""
    params = conn.info.get_parameters()
    return {key: params.get(key, "") for key in LIVENESS_OPTIONS}


EXPECTED = {key: str(value) for key, value in LIVENESS_OPTIONS.items()}


def test_the_worker_pool_api_pool_and_leader_lock_open_connections_with_the_liveness_options(
    services: Services,
    db: psycopg.Connection,
    double: EndpointDouble,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    herd_file = tmp_path / "herd.yaml"
    herd_file.write_text(herd_yaml(double))
    for key, value in herd_env(services, herd_file).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_context.cache_clear()
    try:
        context = get_context()
        with context.connection() as conn:
            assert _liveness_of(conn) == EXPECTED
        context.pool.close()

        server = build(context.herd, get_settings(), services.database_url)
        server.pool.open(wait=True, timeout=60)
        try:
            with server.pool.connection() as conn:
                assert _liveness_of(conn) == EXPECTED
        finally:
            server.pool.close()
    finally:
        get_settings.cache_clear()
        get_context.cache_clear()

    lock = LeaderLock(services.database_url, key=4545)
    try:
        assert lock.check()
        assert lock._conn is not None and _liveness_of(lock._conn) == EXPECTED
    finally:
        lock.close()

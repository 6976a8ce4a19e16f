"""Shared fixtures: real Postgres, real Redis, real worker processes, an endpoint double.

With HERD_DATABASE_URL / HERD_BROKER_URL set, tests use those servers. Otherwise the session starts
its own throwaway Postgres and Redis from the PyPI wheels (herd/local/embedded.py) under a temporary
HERD_HOME, and stops them at the end: a fresh machine needs nothing running beforehand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from herd.ledger.db import migrate
from tests.support.endpoint import EndpointDouble
from tests.support.harness import REPO, TABLES, Herd, Services, herd_yaml


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    # Not pytest's tmp_path: pytest prunes old session folders, which would pull the data
    # directory out from under a Postgres that another session still runs.
    home = Path(tempfile.mkdtemp(prefix="herd-test-home-"))
    db_url = os.environ.get("HERD_DATABASE_URL")
    broker = os.environ.get("HERD_BROKER_URL")
    started = not (db_url and broker)
    if not db_url or not broker:
        from herd.local.embedded import ensure_postgres, ensure_redis

        db_url = db_url or ensure_postgres(home)
        broker = broker or ensure_redis(home)
    migrate(db_url)
    yield Services(db_url, broker, home)
    if started:
        from herd.local.embedded import stop_all

        stop_all(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def db(services: Services) -> Iterator[psycopg.Connection]:
    """A connection to a database emptied before the test, with an empty broker."""
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        redis.Redis.from_url(services.broker_url).flushdb()
        yield conn


@pytest.fixture(scope="session")
def double_server() -> Iterator[EndpointDouble]:
    with EndpointDouble() as server:
        yield server


@pytest.fixture
def double(double_server: EndpointDouble) -> EndpointDouble:
    double_server.reset()
    return double_server


@pytest.fixture
def make_herd(
    services: Services, db: psycopg.Connection, double: EndpointDouble, tmp_path: Path
) -> Iterator[Callable[..., Herd]]:
    herds: list[Herd] = []

    def make(yaml_text: str | None = None, **env_overrides: str) -> Herd:
        path = tmp_path / "herd.yaml"
        path.write_text(yaml_text or herd_yaml(double))
        env = {
            **os.environ,
            "HERD_DATABASE_URL": services.database_url,
            "HERD_BROKER_URL": services.broker_url,
            "HERD_HOME": str(services.home),
            "HERD_HERD_FILE": str(path),
            "HERD_PUMP_INTERVAL_S": "1",
            "PYTHONPATH": str(REPO),
            **env_overrides,
        }
        herd = Herd(services, path, env)
        herds.append(herd)
        return herd

    yield make
    for herd in herds:
        herd.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark by folder, so `pytest -m "not integration and not realmodel"` is the fast in-process subset.
    A unit-folder test that drives the CLI or workers through `make_herd` is integration too."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "realmodel" in parts:
            item.add_marker(pytest.mark.realmodel)
        elif "integration" in parts or "make_herd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)

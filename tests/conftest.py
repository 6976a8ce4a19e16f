"""Shared fixtures: real Postgres, real Redis, real worker processes, an endpoint double.

With HERD_DATABASE_URL / HERD_BROKER_URL set, tests use those servers. Otherwise the session starts
its own throwaway Postgres and Redis from the PyPI wheels (herd/embedded/servers.py) under a temporary
HERD_HOME, and stops them at the end: a fresh machine needs nothing running beforehand.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from herd.embedded.servers import ensure_redis, stop_all
from tests.support import harness
from tests.support.endpoint import EndpointDouble
from tests.support.harness import Herd, Services, herd_yaml


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    # Not pytest's tmp_path: pytest prunes old session folders, which would pull the data
    # directory out from under a Postgres that another session still runs.
    home = Path(tempfile.mkdtemp(prefix="herd-test-home-"))
    with harness.services(home) as svc:
        yield svc
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def db(services: Services) -> Iterator[psycopg.Connection]:
    """A connection to a database emptied before the test, with an empty broker."""
    harness.reset(services)
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def own_redis(services: Services, tmp_path: Path) -> Iterator[tuple[Services, Path]]:
    """The session's Postgres with a Redis of this test's own, under `home` (so the test can stop or
    kill it, and `ensure_redis(home)` starts it again on the same port), stopped after."""
    home = tmp_path / "own-redis"
    try:
        yield dataclasses.replace(services, broker_url=ensure_redis(home)), home
    finally:
        stop_all(home)


@pytest.fixture
def publishing_to_own_redis(
    own_redis: tuple[Services, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Services, Path]]:
    """`own_redis`, with this process's settings and Celery app (`herd.queues.publish`) pointed at it."""
    from herd.queues import app

    def point_at(url: str) -> None:
        # Celery's close() drops the connection pool but keeps the producer pool, bound to the old URL.
        app.close()
        app.amqp._producer_pool = None
        app.conf.broker_url = url

    services, _ = own_redis
    monkeypatch.setenv("HERD_BROKER_URL", services.broker_url)
    before = app.conf.broker_url
    point_at(services.broker_url)
    try:
        yield own_redis
    finally:
        point_at(before)


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
        settings = {"HERD_PUMP_INTERVAL_S": "1", **env_overrides}
        herd = Herd(services, path, harness.herd_env(services, path, **settings))
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

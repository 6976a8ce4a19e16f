"""What a worker process needs, built once on first use: herd config, connection pool, backends."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import psycopg
from psycopg_pool import ConnectionPool

from herd import urls
from herd.backends.registry import make_backends
from herd.cascade.pipeline import Pipeline
from herd.herdfile.model import HerdConfig, load_herd
from herd.ledger.db import connection_options
from herd.policy.active import ActivePolicies
from herd.settings import get_settings

# A pooled connection used less than this many seconds ago is handed out without a check.
CHECK_AFTER_IDLE_S = 1.0


class IdleCheck:
    """The pool's `check` callback: one round trip to Postgres (`ConnectionPool.check_connection`) only
    for a connection idle longer than `idle_s` seconds, the one that may have died unseen (a Postgres
    restart, failover or idle timeout). A busy worker hands a connection back and out again within
    milliseconds; checking it every time cost two round trips per attempt, 3.6% of a worker's CPU.
    A connection that dies while busy fails its statement exactly as one checked a
    millisecond earlier would: the step is retried (herd_workers/tasks.py, Pipeline.run)."""

    def __init__(self, idle_s: float = CHECK_AFTER_IDLE_S) -> None:
        self.idle_s = idle_s
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: psycopg.Connection) -> None:
        """Raises what `check_connection` raises (psycopg.OperationalError) for a dead connection."""
        last = self._last_used.get(conn)
        if last is None or time.monotonic() - last > self.idle_s:
            ConnectionPool.check_connection(conn)

    def used(self, conn: psycopg.Connection) -> None:
        self._last_used[conn] = time.monotonic()


class WorkerContext:
    def __init__(self, herd: HerdConfig, pool: ConnectionPool, idle_check: IdleCheck | None = None) -> None:
        self.herd = herd
        self.pool = pool
        self._idle_check = idle_check
        policies = ActivePolicies(self.connection, ttl_s=get_settings().policy_ttl_s)
        self.pipeline = Pipeline(herd, make_backends(herd), self.connection, policies)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection from the pool: wrap writes that belong together in
        `conn.transaction()`; a lone statement commits by itself, with no extra round trip."""
        with self.pool.connection() as conn:
            yield conn
            if self._idle_check is not None:
                self._idle_check.used(conn)  # only after success: a failed block leaves it to be checked


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    settings = get_settings()
    herd = load_herd(settings.herd_file)
    # One connection per concurrent task of this worker's model, plus one for the pump thread.
    # (Outside `herd worker`, e.g. `celery -A` by hand, size for the herd's busiest model.)
    model = herd.models.get(settings.worker_model or "")
    in_flight = model.max_in_flight if model else max(m.max_in_flight for m in herd.models.values())
    size = in_flight + 1
    idle_check = IdleCheck()
    pool = ConnectionPool(
        urls.database_url(settings),
        min_size=1,
        max_size=size,
        # Autocommit: reads need no COMMIT round trip; see herd/ledger/steps.py. The liveness options
        # fail a connection whose peer went silent (a partition) in seconds: the pump thread's idle
        # check must never block on one, or no stale prompt is re-sent.
        kwargs=connection_options(autocommit=True),
        # After a Postgres restart, failover or idle timeout the pooled connections are dead; checking
        # an idle one before handing it out (one round trip) replaces it instead of failing a step.
        check=idle_check,
        open=True,
    )
    return WorkerContext(herd, pool, idle_check)

"""What a worker process needs, built once on first use: herd config, connection pool, backends."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import lru_cache

import psycopg
from psycopg_pool import ConnectionPool

from herd import urls
from herd.backends.registry import make_backends
from herd.cascade.active import ActivePolicies
from herd.cascade.pipeline import Pipeline
from herd.herdfile.model import HerdConfig, load_herd
from herd.settings import get_settings


class WorkerContext:
    def __init__(self, herd: HerdConfig, pool: ConnectionPool) -> None:
        self.herd = herd
        self.pool = pool
        policies = ActivePolicies(self.connection, ttl_s=get_settings().policy_ttl_s)
        self.pipeline = Pipeline(herd, make_backends(herd), self.connection, policies)

    def connection(self) -> AbstractContextManager[psycopg.Connection]:
        """An autocommit connection from the pool: wrap writes that belong together in
        `conn.transaction()`; a lone statement commits by itself, with no extra round trip."""
        return self.pool.connection()


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    settings = get_settings()
    herd = load_herd(settings.herd_file)
    # One connection per concurrent task of this worker's model, plus one for the pump thread.
    # (Outside `herd worker`, e.g. `celery -A` by hand, size for the herd's busiest model.)
    model = herd.models.get(settings.worker_model or "")
    in_flight = model.max_in_flight if model else max(m.max_in_flight for m in herd.models.values())
    size = in_flight + 1
    pool = ConnectionPool(
        urls.database_url(settings),
        min_size=1,
        max_size=size,
        # Autocommit: reads need no COMMIT round trip; see herd/ledger/steps.py.
        kwargs={"autocommit": True},
        # After a Postgres restart, failover or idle timeout the pooled connections are dead; checking
        # each before handing it out (one round trip) replaces them instead of failing a step.
        check=ConnectionPool.check_connection,
        open=True,
    )
    return WorkerContext(herd, pool)

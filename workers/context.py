"""What a worker process needs, built once on first use: herd config, connection pool, backends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import psycopg
from psycopg_pool import ConnectionPool

from services import runtime
from services.backends import make_backends
from services.config import HerdConfig, load_herd
from services.pipeline import Pipeline
from services.settings import get_settings


class WorkerContext:
    def __init__(self, herd: HerdConfig, pool: ConnectionPool) -> None:
        self.herd = herd
        self.pool = pool
        self.pipeline = Pipeline(herd, make_backends(herd), self.connection)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            yield conn


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    settings = get_settings()
    herd = load_herd(settings.herd_file)
    # One connection per concurrent task, plus one for the pump thread.
    size = max(model.max_in_flight for model in herd.models.values()) + 1
    pool = ConnectionPool(runtime.database_url(settings), min_size=1, max_size=size, open=True)
    return WorkerContext(herd, pool)

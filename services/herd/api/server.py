"""`herd serve`: the API app and its batch keeper in one process, under uvicorn.

One process, one event loop: uvicorn serves the routes (database work in Starlette's thread pool, on a
psycopg pool), and the keeper (herd/api/keeper.py) runs in a thread beside them from startup to
shutdown. Both read the herd file once, at start: a changed herd file needs a restart, as a worker does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import psycopg
import uvicorn
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette

from herd.api.app import ApiContext, create_app
from herd.api.keeper import Keeper, Limits
from herd.api.store import make_store
from herd.herdfile.model import HerdConfig
from herd.ledger.db import connection_options
from herd.queues import publish
from herd.settings import Settings

log = logging.getLogger(__name__)
# Connections: the keeper's step plus a file stream it reads, and the handlers' thread pool.
POOL_SIZE = 8


@dataclass(frozen=True)
class Server:
    app: Starlette
    keeper: Keeper
    pool: ConnectionPool


def build(herd: HerdConfig, settings: Settings, database_url: str) -> Server:
    """The app, its keeper and their connection pool (opened when the app starts)."""
    pool = ConnectionPool(
        database_url, min_size=1, max_size=POOL_SIZE, kwargs=connection_options(), open=False, name="herd-api"
    )

    @contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with pool.connection() as conn:
            yield conn

    store = make_store(settings.api_file_store, connect)
    keeper = Keeper(
        herd=herd,
        connect=connect,
        store=store,
        limits=Limits(
            settings.dispatch_window, settings.api_max_requests, settings.api_drain_s, settings.stale_after_s
        ),
        publish=publish,
    )
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool.open(wait=True, timeout=30)
        thread = threading.Thread(
            target=keeper.run, args=(stop, settings.api_poll_s), name="herd-batch-keeper", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)
            pool.close()

    context = ApiContext(connect=connect, store=store, max_file_bytes=settings.api_max_file_bytes)
    return Server(create_app(context, lifespan), keeper, pool)


def serve(server: Server, host: str, port: int, log_level: str = "info") -> None:
    """Run until interrupted (SIGINT/SIGTERM: uvicorn finishes the requests in flight, then the keeper
    stops between steps)."""
    uvicorn.run(server.app, host=host, port=port, log_level=log_level, access_log=False)

"""`herd housekeeper`: housekeeping that depends on no worker (herd/housekeeping/service.py)."""

from __future__ import annotations

import logging
import signal
import threading

import click

from herd.cli.app import check_broker, console, herd_config, main, wait_for_schema


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address of /health and /metrics.")
@click.option("--port", default=9465, show_default=True, type=int, help="Port of /health and /metrics.")
@click.option(
    "--fill-budget",
    "fill_budget_s",
    default=10.0,
    show_default=True,
    help="Seconds one tick may spend storing cost shares and sealing jobs before the next tick goes on.",
)
@wait_for_schema
@click.pass_context
def housekeeper(ctx: click.Context, address: str, port: int, fill_budget_s: float, wait_s: float) -> None:
    """Re-send stale prompts, keep the dispatch window full, store cost shares and seal finished jobs,
    whether or not any worker runs (one leader among replicas, by a Postgres advisory lock)."""
    from psycopg_pool import ConnectionPool

    from herd.cascade.pipeline import Pipeline
    from herd.housekeeping.leader import LeaderLock
    from herd.housekeeping.service import Housekeeper, serve
    from herd.housekeeping.work import Housekeeping, request_bound
    from herd.ledger.db import connection_options, ensure_current
    from herd.policy.active import ActivePolicies
    from herd.queues import publish
    from herd.settings import get_settings
    from herd.urls import database_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    herd = herd_config(ctx)
    url = database_url()
    # It re-sends and tops up queues, with no worker running (scale to zero): not into a Redis that may
    # evict them. A Redis not up yet is not a reason to refuse (a publish that fails is due next tick).
    check_broker(down_ok=True)
    ensure_current(url, wait_s=wait_s)  # like a worker: never migrates, waits for `herd migrate`
    # One connection per half (dispatch, seal); the leader lock has its own.
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=2,
        kwargs=connection_options(autocommit=True),
        open=True,
        check=ConnectionPool.check_connection,
    )
    connect = pool.connection
    # Budget releases need each task's decision rule (policies, herd file), never a model endpoint.
    pipeline = Pipeline(herd, {}, connect, ActivePolicies(connect, ttl_s=settings.policy_ttl_s))
    work = Housekeeping(
        connect,
        settings,
        release=pipeline.release_budgets,
        publish=publish,
        fill_budget_s=fill_budget_s,
        longest_request_s=request_bound(herd),
        herd=herd,
    )
    keeper = Housekeeper(work, LeaderLock(url), interval_s=settings.pump_interval_s)
    keeper.start()
    server = serve(keeper, address, port)
    console.print(
        f"housekeeper: every {settings.pump_interval_s:g}s; health and metrics on "
        f"http://{address}:{port}/health, /metrics",
        markup=False,
    )
    stopped = threading.Event()
    # A container stop sends TERM: give the lock up and exit 0 rather than die on the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    keeper.stop()
    server.shutdown()
    server.server_close()
    pool.close()

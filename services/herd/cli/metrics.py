"""`herd metrics`: the Prometheus exporter (herd/observability/metrics.py), one per deployment."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

from herd.cli.app import console, herd_config, main


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9464, show_default=True, type=int, help="Port of /metrics.")
@click.option(
    "--max-age",
    "max_age_s",
    default=15.0,
    show_default=True,
    help="Seconds scrapes may share one read of the ledger (queue lengths are always fresh).",
)
@click.option(
    "--cost-max-age",
    "cost_max_age_s",
    default=300.0,
    show_default=True,
    help="Seconds between background refreshes of the attributed cost (the expensive query).",
)
@click.pass_context
def metrics(ctx: click.Context, address: str, port: int, max_age_s: float, cost_max_age_s: float) -> None:
    """Serve Prometheus metrics computed from the ledger and the broker on each scrape.

    No credentials or per-job labels are exported, so it may listen beyond loopback."""
    import psycopg
    import redis
    from prometheus_client import start_http_server

    from herd.ledger.db import connect as connect_db
    from herd.ledger.db import connection_options
    from herd.observability.metrics import HerdCollector, registry_for
    from herd.urls import broker_url, database_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    herd = herd_config(ctx)
    db_url = database_url()

    def connect() -> psycopg.Connection[Any]:
        # Long-lived (scrape to scrape): keepalives and a TCP user timeout, so a dead peer fails a
        # scrape instead of hanging the exporter.
        return connect_db(db_url, **connection_options(autocommit=True))

    client = redis.Redis.from_url(broker_url(), socket_timeout=10, socket_connect_timeout=10)
    collector = HerdCollector(
        connect,
        client,
        list(herd.models),
        herd=herd,
        max_age_s=max_age_s,
        cost_max_age_s=cost_max_age_s,
        tasks=herd.tasks,
    )
    server, thread = start_http_server(port, addr=address, registry=registry_for(collector))
    console.print(f"serving metrics on http://{address}:{port}/metrics")
    stopped = threading.Event()
    # A container stop sends TERM: close the socket and exit 0 rather than die on the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
    collector.close()

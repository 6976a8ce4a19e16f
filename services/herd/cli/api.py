"""`herd serve` (the OpenAI Files and Batches API) and `herd keys` (its bearer keys)."""

from __future__ import annotations

import logging

import click

from herd.cli.app import check_broker, console, database, herd_config, main, wait_for_schema
from herd.reporting.tables import Column, print_table


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port of the API (base URL /v1).")
@wait_for_schema
@click.option("--loglevel", default="info", show_default=True)
@click.pass_context
def serve(ctx: click.Context, address: str, port: int, wait_s: float, loglevel: str) -> None:
    """Serve the OpenAI Files and Batches API: point the OpenAI SDK at http://ADDRESS:PORT/v1 with a key
    from `herd keys create`. Every request needs a key; it listens on 127.0.0.1 unless told otherwise
    (docs/batch-api.md)."""
    from herd.api.server import build
    from herd.api.server import serve as run
    from herd.ledger.db import ensure_current
    from herd.settings import get_settings
    from herd.urls import broker_url, database_url

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    herd = herd_config(ctx)
    url = database_url()
    broker_url()  # the embedded Redis, started now if it is the one, not at the first batch
    # It publishes batches' prompts: not to a Redis that may evict them. A Redis not up yet is not a
    # reason to refuse to serve (publishing waits for it; the stale sweep re-sends).
    check_broker(down_ok=True)
    # Like a worker, the server never migrates: a deployment migrates once, first (`herd migrate`).
    ensure_current(url, wait_s=wait_s)
    server = build(herd, get_settings(), url)
    console.print(
        f"Herd's OpenAI Batch API on http://{address}:{port}/v1 (keys: `herd keys create --owner NAME`)",
        markup=False,
        soft_wrap=True,
    )
    run(server, address, port, loglevel.lower())


@main.group()
def keys() -> None:
    """Bearer keys of the API server: create, list, revoke."""


@keys.command("create")
@click.option("--owner", required=True, help="Who the key is for; their keys share their files and batches.")
def create_key(owner: str) -> None:
    """Create a key and print it, once: it is stored only as its SHA-256."""
    import psycopg

    from herd.api.keys import create

    with psycopg.connect(database()) as conn:
        key, token = create(conn, owner)
    click.echo(token)
    console.print(
        f"key {key.id} for {key.owner}: shown once, keep it secret. With the OpenAI SDK: "
        f'OpenAI(base_url="http://127.0.0.1:8080/v1", api_key=KEY)',
        markup=False,
        soft_wrap=True,
    )


KEY_COLUMNS = (
    Column("id"),
    Column("owner", numeric=False),
    Column("key", numeric=False),
    Column("created", numeric=False),
    Column("revoked", numeric=False),
)


@keys.command("list")
def list_keys() -> None:
    """Every key: its id, owner, first characters, when it was made and revoked."""
    import psycopg
    from rich.console import Console

    from herd.api.keys import listed

    with psycopg.connect(database()) as conn:
        rows = [
            [
                str(k.id),
                k.owner,
                f"{k.prefix}...",
                f"{k.created_at:%Y-%m-%d %H:%M}",
                f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
            ]
            for k in listed(conn)
        ]
    print_table(Console(), KEY_COLUMNS, rows)


@keys.command("revoke")
@click.argument("key")
def revoke_key(key: str) -> None:
    """Revoke KEY (its id, or the first characters `herd keys list` shows): it is refused from then on."""
    import psycopg

    from herd.api.keys import revoke

    with psycopg.connect(database()) as conn:
        revoked = revoke(conn, key)
    for item in revoked:
        console.print(f"revoked key {item.id} ({item.prefix}...) of {item.owner}", markup=False)

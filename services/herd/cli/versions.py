"""`activate` and `deactivate` for a group of versioned things (`herd policy`, `herd router`).

Both groups point a task at one stored version (herd/ledger/versioned.py); only the words differ.
"""

from __future__ import annotations

import importlib

import click

from herd.cli.output import out


def add_activation(
    group: click.Group,
    *,
    store: str,
    activate_help: str,
    deactivate_help: str,
    active: str,
    deactivated: str,
    none_active: str,
) -> None:
    """Register `activate VERSION --task T` and `deactivate --task T` on `group`.

    `store` names the ledger module (herd.ledger.policies or herd.ledger.routers) with
    `activate(conn, task, version)` and `deactivate(conn, task) -> bool`; it is imported only when a
    command runs, so `herd --help` imports no database driver. `active` is formatted with `task` and
    `version`; `deactivated` / `none_active` with `task`. A version the task lacks is the ledger's
    one-line InputError, which `herd`'s entry point prints."""

    @group.command(help=activate_help)
    @click.argument("version", type=int)
    @click.option("--task", required=True)
    def activate(version: int, task: str) -> None:
        import psycopg

        from herd.urls import database_url

        with psycopg.connect(database_url()) as conn:
            v = importlib.import_module(store).activate(conn, task, version)
        out.print(active.format(task=task, version=v.version), markup=False)

    @group.command(help=deactivate_help)
    @click.option("--task", required=True)
    def deactivate(task: str) -> None:
        import psycopg

        from herd.urls import database_url

        with psycopg.connect(database_url()) as conn:
            gone = importlib.import_module(store).deactivate(conn, task)
        out.print((deactivated if gone else none_active).format(task=task), markup=False)

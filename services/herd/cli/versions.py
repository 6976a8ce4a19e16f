"""`activate` and `deactivate` for a group of versioned things (`herd policy`, `herd router`).

Both groups point a task at one stored version (herd/policy/versioned.py); only the words differ.
"""

from __future__ import annotations

import importlib

import click

from herd.input_errors import InputError
from herd.output import out


def add_activation(
    group: click.Group,
    *,
    store: str,
    kind: str,
    activate_help: str,
    deactivate_help: str,
    active: str,
    deactivated: str,
    none_active: str,
) -> None:
    """Register `activate VERSION --task T` and `deactivate --task T` on `group`.

    `kind` ("policy" or "router", herd/herdfile/references.py) says which active version activation
    checks against the herd file. `store` names the ledger module (herd.policy.versions or
    herd.policy.router.versions) with `activate(conn, task, version)` and `deactivate(conn, task) -> bool`;
    it is imported only when a command runs, so `herd --help` imports no database driver. `active` is
    formatted with `task` and `version`; `deactivated` / `none_active` with `task`. A version the task
    lacks, or one naming what the herd file lacks, is a one-line InputError (nothing activated), which
    `herd`'s entry point prints."""

    @group.command(help=activate_help)
    @click.argument("version", type=int)
    @click.option("--task", required=True)
    def activate(version: int, task: str) -> None:
        import psycopg

        from herd.cli.app import herd_config
        from herd.jobs.references import stale_versions
        from herd.urls import database_url

        herd = herd_config(click.get_current_context())
        with psycopg.connect(database_url()) as conn:
            v = importlib.import_module(store).activate(conn, task, version)
            # The same check workers and `herd submit` make: a version naming what the herd file lacks
            # is refused here, and the exception rolls the activation back.
            for ref in stale_versions(conn, herd, task, active=False):
                if ref.kind == kind:
                    raise InputError(str(ref))
        out.print(active.format(task=task, version=v.version), markup=False)

    @group.command(help=deactivate_help)
    @click.option("--task", required=True)
    def deactivate(task: str) -> None:
        import psycopg

        from herd.urls import database_url

        with psycopg.connect(database_url()) as conn:
            gone = importlib.import_module(store).deactivate(conn, task)
        out.print((deactivated if gone else none_active).format(task=task), markup=False)

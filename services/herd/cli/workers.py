"""`herd migrate`, `herd worker`, `herd flower`.

The composition root: the only module of the `herd` package that imports `herd_workers`."""

from __future__ import annotations

import logging
import os
import sys

import click

from herd.cli.app import check_broker, console, database, herd_config, main, wait_for_schema


@main.command()
def migrate() -> None:
    """Bring the database schema to the latest revision."""
    database()
    console.print("database schema is up to date")


@main.command()
@click.option("--model", required=True, help="The herd model whose queue this worker consumes.")
@click.option("--loglevel", default="info", show_default=True)
@wait_for_schema
@click.pass_context
def worker(ctx: click.Context, model: str, loglevel: str, wait_s: float) -> None:
    """Run a Celery worker for one model's queue (herd.<model>)."""
    from herd.herdfile.model import ConfigError
    from herd.queues import app, queue_for
    from herd.settings import get_settings

    herd = herd_config(ctx)
    if model not in herd.models:
        raise ConfigError(f"unknown model {model!r}; the herd file defines: {', '.join(herd.models)}")
    from herd.ledger.db import ensure_current
    from herd.urls import database_url

    # Workers never migrate: many starting at once would race, and a deploy migrates once, first.
    ensure_current(database_url(), wait_s=wait_s)
    # The worker's own model sizes its connection pool (herd_workers.context).
    os.environ["HERD_WORKER_MODEL"] = model
    get_settings.cache_clear()
    from herd_workers.context import get_context

    get_context()  # a bad herd file, key or database fails here, with exit status 2, before consuming
    # A broker that may evict the queue: one line and exit 2, before consuming. One not up yet is
    # waited for by Celery, and checked once connected (herd_workers/tasks.py `_start_pump`).
    check_broker(down_ok=True)
    quiet_task_lines(loglevel)
    # app.start rather than worker_main: it returns the worker's exit code, which must reach the shell.
    code = app.start(
        [
            "worker",
            "--queues",
            queue_for(model),
            "--hostname",
            f"{model}@%h",
            # Inference calls are I/O-bound HTTP: threads, one per request the endpoint may have in flight.
            "--pool",
            "threads",
            "--concurrency",
            str(herd.models[model].max_in_flight),
            "--prefetch-multiplier",
            "1",
            *(["--task-events"] if get_settings().task_events else []),
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            loglevel,
        ]
    )
    from herd_workers.tasks import stopped_on_request

    sys.exit(worker_exit_code(code, asked_to_stop=stopped_on_request()))


# Celery's two INFO lines per task ("Task ... received", "Task ... succeeded in ..."): each attempt is
# in the ledger with more detail; they were 3.7% of a worker's Python time against an instant endpoint,
# and 200M lines for a 100M-attempt night. Herd's own lines (retries, failures) and Celery's warnings
# stay.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def quiet_task_lines(loglevel: str) -> None:
    """Below DEBUG, drop Celery's per-task INFO lines (PER_TASK_LOGGERS); `--loglevel debug` keeps them.
    Must run before the worker starts: Celery reads the level once, when it builds a task's tracer."""
    if loglevel.upper() != "DEBUG":
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def worker_exit_code(celery_code: int | None, *, asked_to_stop: bool) -> int:
    """The exit status of `herd worker`. A worker that stops without being told to has failed,
    whatever Celery returns: kombu can end a worker with "Unrecoverable error" and status 0 when
    Redis is killed under it (seen in benchmarks/faults.py), and a supervisor that restarts only
    failed processes (systemd `Restart=on-failure`, compose `on-failure`) must restart it."""
    if celery_code:
        return int(celery_code)
    if not asked_to_stop:
        console.print("error: the worker stopped on its own (see its log); exit status 1", markup=False)
        return 1
    return 0


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    help="Let Flower listen on a non-loopback address without FLOWER_BASIC_AUTH (a trusted network).",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def flower(ctx: click.Context, allow_unauthenticated: bool, args: tuple[str, ...]) -> None:
    """Run Flower on the herd's broker, listing every model's queue (extra arguments go to Flower).

    It listens on 127.0.0.1 unless --address says otherwise; any other address needs credentials in
    FLOWER_BASIC_AUTH=user:password (or Flower's --auth)."""
    from herd.monitor import flower_args, show_every_queue
    from herd.queues import app, queue_for

    flower_argv = flower_args(args, allow_unauthenticated=allow_unauthenticated)
    show_every_queue(app, [queue_for(model) for model in herd_config(ctx).models])
    app.start(["flower", *flower_argv])

"""`herd up`, `herd down`, `herd ps`, `herd demo`: the one-machine runtime under HERD_HOME."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from herd.cli.app import console, main
from herd.output import masked


@main.command()
def up() -> None:
    """Start the embedded Postgres and Redis (when no URLs are configured)."""
    from herd.urls import broker_url, database_url

    console.print(f"postgres: {masked(database_url())}\nredis: {masked(broker_url())}")


@main.command()
def down() -> None:
    """Stop the local herd (workers, model servers) and the embedded services under HERD_HOME."""
    from herd.embedded.servers import status as service_status
    from herd.embedded.servers import stop_all
    from herd.local import localherd
    from herd.settings import get_settings

    home = get_settings().home
    running = [f"{p.kind} {p.name}" for p in localherd.status(home) if p.pid] + [
        i.name for i in service_status(home) if i.running
    ]
    localherd.stop(home)
    stop_all(home)
    console.print(f"stopped: {', '.join(running)}" if running else f"nothing was running under {home}")


@main.command()
def ps() -> None:
    """List the embedded services and the local herd's processes under HERD_HOME."""
    from herd.embedded.servers import status as service_status
    from herd.local import localherd
    from herd.settings import get_settings

    home = get_settings().home
    table = Table("process", "running", "pid", "url / log")
    for info in service_status(home):
        table.add_row(info.name, "yes" if info.running else "no", str(info.pid or "-"), masked(info.url))
    for proc in localherd.status(home):
        table.add_row(
            f"{proc.kind} {proc.name}", "yes" if proc.pid else "no", str(proc.pid or "-"), str(proc.log)
        )
    out = Console()
    out.print(table)
    # Configured URLs win over the embedded servers (herd/urls.py): say so, or "no" above misleads.
    settings = get_settings()
    for what, url, var in (
        ("database", settings.database_url, "HERD_DATABASE_URL"),
        ("broker", settings.broker_url, "HERD_BROKER_URL"),
    ):
        if url:
            out.print(f"{what}: {masked(url)} (from {var}; the embedded one is not used)", markup=False)


@main.command()
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait for each phase's jobs.")
def demo(timeout: float) -> None:
    """Run the whole system locally: two real models choose a policy per task on a calibration
    sample, run the rest of the set under it, and compare it with each model alone."""
    from herd.local.demo import run as local_demo
    from herd.settings import get_settings

    try:
        local_demo.run(get_settings(), Console(), timeout_s=timeout)
    except KeyboardInterrupt:
        sys.exit(130)

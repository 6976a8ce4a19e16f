"""The `herd` command group and what its commands share: user errors as one line, the herd file, the database.

Configuration is loaded lazily inside each command, so `--help` touches nothing."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.console import Console
from rich.text import Text

from herd.brokerpolicy import EvictingBrokerError
from herd.files import OutputPathError
from herd.herdfile.model import ConfigError, HerdConfig, load_herd
from herd.jobs.documents import InputError
from herd.jobs.status import UnknownJobError
from herd.ledger.db import SchemaError
from herd.redact import install_log_redaction, mask_url, redact
from herd.settings import get_settings

if TYPE_CHECKING:
    import psycopg

console = Console(stderr=True)
USER_ERRORS: tuple[type[Exception], ...] = (
    EvictingBrokerError,
    ConfigError,
    InputError,
    UnknownJobError,
    SchemaError,
    OutputPathError,
)


def unreachable_service(exc: BaseException) -> str | None:
    """One line for a database or broker that cannot be reached (down, wrong URL, no such database),
    with the URL's password masked; None for anything else. psycopg and herd.queues (the broker's
    errors) are imported lazily by the commands that use them, so they are looked up only if loaded."""
    settings = get_settings()
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        # Not herd.urls.database_url(): without a configured URL it would start the embedded server.
        where = (
            mask_url(settings.database_url)
            if settings.database_url
            else f"the embedded Postgres ({settings.home})"
        )
        return f"cannot reach the database at {where}: {_one_line(exc)}"
    queues = sys.modules.get("herd.queues")  # every broker call goes through it
    if queues is not None and isinstance(exc, queues.BROKER_DOWN):
        where = (
            mask_url(settings.broker_url) if settings.broker_url else f"the embedded Redis ({settings.home})"
        )
        return f"cannot reach the broker at {where}: {_one_line(exc)}"
    return None


def _one_line(exc: BaseException) -> str:
    # psycopg's connection errors span lines ("...failed: Connection refused\n\tIs the server running").
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__


def fail(message: str, status: int = 2) -> NoReturn:
    """Print `message` as Herd's one error line (credentials masked) and exit with `status`:
    2 for input the user can fix, 1 for the environment (a service down)."""
    # soft_wrap: a long path must stay on one line, so the message can be grepped and clicked.
    console.print(Text.assemble(("error: ", "bold red"), redact(message)), soft_wrap=True)
    sys.exit(status)


def warn(message: str) -> None:
    """Print `message` as one warning line on stderr (credentials masked); the command goes on."""
    console.print(Text.assemble(("warning: ", "bold yellow"), redact(message)), soft_wrap=True)


def check_broker(*, down_ok: bool = False) -> None:
    """The broker answers and cannot silently drop messages (herd/queues.py `check_broker`): raises
    for a broker that evicts, and for one that is down unless `down_ok` (a server or worker started
    before its Redis waits for it, and checks it again once connected); prints the warnings (no
    persistence, a policy unread)."""
    from herd.queues import BROKER_DOWN
    from herd.queues import check_broker as check

    try:
        lines = check()
    except BROKER_DOWN:
        if not down_ok:
            raise
        return
    for line in lines:
        warn(line)


class HerdGroup(click.Group):
    """Turn the errors a user can fix into one clear line and exit status 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from herd.local.daemons import ProcessError

        try:
            return super().invoke(ctx)
        except USER_ERRORS + (ProcessError,) as exc:
            fail(str(exc))
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click reports these itself
        except Exception as exc:
            down = unreachable_service(exc)
            if down is not None:  # the environment, not a bug: one line, exit 1
                fail(down, status=1)
            # Anything else is a bug or an environment problem: its traceback, but never a credential
            # (psycopg and SQLAlchemy quote a malformed database URL back, password and all).
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
            sys.exit(1)


@click.group(cls=HerdGroup)
@click.option(
    "--herd-file",
    type=click.Path(path_type=Path),
    envvar="HERD_HERD_FILE",
    help="Herd definition (default herd.yaml, or $HERD_HERD_FILE).",
)
@click.pass_context
def main(ctx: click.Context, herd_file: Path | None) -> None:
    """Herd: run a herd of open LLMs as one system for bulk work."""
    install_log_redaction()
    if herd_file is not None:
        # Settings are the one source of configuration, also for the worker code Celery runs.
        os.environ["HERD_HERD_FILE"] = str(herd_file.resolve())
        get_settings.cache_clear()
    ctx.obj = get_settings().herd_file


# For the long-running commands a deployment starts beside `herd migrate` (worker, serve): they never
# migrate, they wait for the schema (herd.ledger.db.ensure_current).
wait_for_schema = click.option(
    "--wait-for-schema",
    "wait_s",
    default=60.0,
    show_default=True,
    help="Seconds to wait for `herd migrate` (run elsewhere) to bring the schema up to date.",
)


def herd_config(ctx: click.Context) -> HerdConfig:
    return load_herd(ctx.find_root().obj)


def stale_lines(ctx: click.Context, conn: psycopg.Connection, job: str) -> list[str]:
    """One `stale:` line per stored reference of `job` the herd file no longer backs (its task's active
    policy or router naming a missing model, prompts waiting at one): herd/jobs/references.py."""
    from herd.jobs.references import for_job

    try:
        herd = herd_config(ctx)
    except ConfigError:
        # No herd file here (status and report read only the ledger): nothing to check against. The
        # workers' logs and `herd metrics`, which run with one, still show it.
        return []
    return [f"stale: {ref}" for ref in for_job(conn, herd, job)]


def database() -> str:
    from herd.ledger.db import migrate
    from herd.urls import database_url

    url = database_url()
    migrate(url)
    return url

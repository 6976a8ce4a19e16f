"""The `herd` command group and what its commands share: errors as one line, the herd file, the database.

Configuration is loaded lazily inside each command, and so is every module that reaches a database
or a model: `herd --help` imports neither (tests/unit/test_cli_app.py holds it to that)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.console import Console
from rich.text import Text

from herd.errors import ServiceError, UserError
from herd.redact import install_log_redaction, mask_url, redact

if TYPE_CHECKING:
    import psycopg

    from herd.herdfile.model import HerdConfig
    from herd.settings import Settings

console = Console(stderr=True)


def unreachable_service(exc: BaseException) -> str | None:
    """One line for a database or broker that cannot be reached (down, wrong URL, no such database),
    with the URL's password masked; None for anything else. psycopg and herd.queues (the broker's
    errors) are imported lazily by the commands that use them, so they are looked up only if loaded."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        settings = _settings()
        # Not herd.urls.database_url(): without a configured URL it would start the embedded server.
        where = (
            mask_url(settings.database_url)
            if settings.database_url
            else f"the embedded Postgres ({settings.home})"
        )
        return f"cannot reach the database at {where}: {_one_line(exc)}"
    queues = sys.modules.get("herd.queues")  # every broker call goes through it
    if queues is not None and isinstance(exc, queues.BROKER_DOWN):
        settings = _settings()
        where = (
            mask_url(settings.broker_url) if settings.broker_url else f"the embedded Redis ({settings.home})"
        )
        return f"cannot reach the broker at {where}: {_one_line(exc)}"
    return None


def _settings() -> Settings:
    from herd.settings import get_settings

    return get_settings()


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


@contextmanager
def naming_services() -> Iterator[None]:
    """Raise a database or broker that cannot be reached (psycopg's and the broker's own exceptions,
    not Herd's) as the ServiceError that names it (unreachable_service)."""
    try:
        yield
    except Exception as exc:
        down = unreachable_service(exc)
        if down is None:
            raise
        raise ServiceError(down) from exc


class HerdGroup(click.Group):
    """The one place Herd's errors meet the user: a UserError (input, configuration, usage) is one
    line and exit status 2, a ServiceError (a service failed) one line and exit status 1; anything
    else is a bug, shown with its traceback. No error is classified by its message."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            with naming_services():
                return super().invoke(ctx)
        except UserError as exc:
            fail(str(exc), status=2)
        except ServiceError as exc:
            fail(str(exc), status=1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click reports these itself
        except Exception:  # noqa: BLE001 - a bug: its traceback, below
            # A bug: its traceback, but never a credential (psycopg and SQLAlchemy quote a malformed
            # database URL back, password and all).
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
            sys.exit(1)


@click.group(cls=HerdGroup)
@click.option(
    "--herd-file",
    type=click.Path(path_type=Path),
    envvar="HERD_HERD_FILE",
    help="Herd definition (default herd.yaml, or $HERD_HERD_FILE).",
)
def main(herd_file: Path | None) -> None:
    """Herd: run a herd of open LLMs as one system for bulk work."""
    install_log_redaction()
    if herd_file is not None:
        # Settings are the one source of configuration, also for the worker code Celery runs.
        os.environ["HERD_HERD_FILE"] = str(herd_file.resolve())
        # Settings read before (by an earlier command in the same process) are read again; not
        # imported here otherwise: `herd COMMAND --help` runs this too, and need not load pydantic.
        settings = sys.modules.get("herd.settings")
        if settings is not None:
            settings.get_settings.cache_clear()


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
    """The herd file `--herd-file`, $HERD_HERD_FILE or the default names, loaded and checked."""
    from herd.herdfile.model import load_herd
    from herd.settings import get_settings

    return load_herd(get_settings().herd_file)


def stale_lines(ctx: click.Context, conn: psycopg.Connection, job: str) -> list[str]:
    """One `stale:` line per stored reference of `job` the herd file no longer backs (its task's active
    policy or router naming a missing model, prompts waiting at one): herd/jobs/references.py."""
    from herd.herdfile.model import ConfigError
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

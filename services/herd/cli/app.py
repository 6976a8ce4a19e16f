"""The `herd` command group and what its commands share: user errors as one line, the herd file, the database.

Configuration is loaded lazily inside each command, so `--help` touches nothing."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from herd.herdfile.model import ConfigError, HerdConfig, load_herd
from herd.jobs.documents import InputError
from herd.jobs.status import UnknownJobError
from herd.ledger.db import SchemaError
from herd.redact import install_log_redaction, redact
from herd.settings import get_settings

console = Console(stderr=True)
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, InputError, UnknownJobError, SchemaError)


class HerdGroup(click.Group):
    """Turn the errors a user can fix into one clear line and exit status 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from herd.local.daemons import ProcessError

        try:
            return super().invoke(ctx)
        except USER_ERRORS + (ProcessError,) as exc:
            # soft_wrap: a long path must stay on one line, so the message can be grepped and clicked.
            console.print(Text.assemble(("error: ", "bold red"), redact(str(exc))), soft_wrap=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click reports these itself
        except Exception:
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


def herd_config(ctx: click.Context) -> HerdConfig:
    return load_herd(ctx.find_root().obj)


def database() -> str:
    from herd.ledger.db import migrate
    from herd.urls import database_url

    url = database_url()
    migrate(url)
    return url

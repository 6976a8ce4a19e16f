"""Connections and migrations. Postgres is the source of truth; runtime SQL lives in herd/ledger/steps.py."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

from herd.errors import UserError


def _migrations_dir() -> Path:
    """Where the `herd_migrations` package is installed, found without importing it: the core never
    imports migration code (which imports the core's schema), so the two never form a cycle."""
    spec = importlib.util.find_spec("herd_migrations")
    if spec is None or spec.origin is None:
        raise RuntimeError("the herd_migrations package is not installed beside herd; reinstall Herd")
    return Path(spec.origin).parent


MIGRATIONS_DIR = _migrations_dir()


def sqlalchemy_url(url: str) -> str:
    """Alembic runs on SQLAlchemy; point it at the psycopg 3 driver for a plain postgresql:// URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(url, **kwargs)  # type: ignore[arg-type]  # kwargs are connection options


class SchemaError(UserError, RuntimeError):
    """The database's schema is not the one this version of Herd needs."""


def head_revision() -> str:
    """The newest migration this installation ships (e.g. '0003')."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - alembic only when the schema is checked, never for `herd --help`

    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    if head is None:
        raise SchemaError("no migrations are installed with herd")
    return head


def current_revision(url: str) -> str | None:
    """The revision the database is at; None for a database Herd never migrated."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None


def ensure_current(url: str, *, wait_s: float = 0.0, poll_s: float = 1.0) -> None:
    """Return once the schema is at this installation's head, waiting up to `wait_s` seconds for a
    migration step running elsewhere (compose's `migrate` service, a Kubernetes Job).

    Workers call this instead of migrating: schema changes are one deliberate step, never a race
    between many worker starts. Raises SchemaError naming both revisions and the command to run.
    """

    head = head_revision()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            current = current_revision(url)
        except psycopg.OperationalError as exc:
            # Not reachable yet (starting up, restarting): a worker started beside its database waits
            # for it too, within the same bound, instead of dying with a traceback.
            if time.monotonic() >= deadline:
                raise SchemaError(f"cannot reach the database after {wait_s:.0f}s: {exc}") from exc
            time.sleep(poll_s)
            continue
        if current == head:
            return
        if time.monotonic() >= deadline:
            at = f"revision {current}" if current else "an empty schema"
            raise SchemaError(f"the database is at {at}, this Herd needs revision {head}: run `herd migrate`")
        time.sleep(poll_s)

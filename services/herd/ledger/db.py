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


# libpq options for every long-lived connection (a pool's, the leader lock's): a peer that stops
# answering (a network partition, a host gone without a RST, a failover) fails the connection in
# seconds, as psycopg.OperationalError, instead of leaving its thread blocked. libpq has no read
# timeout: without these a statement sent into a partition is retransmitted with exponential backoff
# until the kernel's tcp_retries2 (about 15 minutes), and an idle connection to a vanished host is
# noticed only after the kernel's 2-hour keepalive default (PostgreSQL manual, 34.1.2 "Parameter
# Key Words": keepalives*, tcp_user_timeout).
# - keepalives_idle 10 s, then a probe every 5 s, 3 unanswered: an idle connection is known dead
#   within 10 + 3 * 5 = 25 s.
# - tcp_user_timeout 25,000 ms: data (a statement) left unacknowledged 25 s fails the connection; the
#   same horizon as the keepalives. It bounds only a peer that stops acknowledging, never a slow
#   query (the server acknowledges the statement at once; statement_timeout is for slow queries).
#   Linux only; other systems ignore it and keep the keepalives.
# 25 s is longer than a brief network blip (retransmissions still get through) and well inside a
# worker's stale period, so a connection lost this way costs one failed step, not a stuck worker.
LIVENESS_OPTIONS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}


def connection_options(**overrides: object) -> dict[str, object]:
    """Keyword arguments for `psycopg.connect` (or a psycopg_pool pool's `kwargs`) for a long-lived
    connection: `LIVENESS_OPTIONS` plus a 10 s `connect_timeout` (seconds), then `overrides`
    (e.g. `autocommit=True`)."""
    return {**LIVENESS_OPTIONS, "connect_timeout": 10, **overrides}


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

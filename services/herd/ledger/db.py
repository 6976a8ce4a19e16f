"""Connections and migrations. Postgres is the source of truth; runtime SQL lives in herd/ledger/steps.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config


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

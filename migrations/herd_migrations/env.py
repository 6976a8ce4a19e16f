"""Alembic environment: one transaction per migration, guarded by lock and statement timeouts."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool, text

from herd.ledger.db import sqlalchemy_url
from herd.ledger.schema import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("database_url")
    if url is None:
        from herd.urls import database_url  # noqa: PLC0415 - may start the embedded Postgres

        url = database_url()
    return sqlalchemy_url(url)


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # A migration waiting on a lock held by a busy worker must fail fast, not stall the herd.
        connection.execute(text("SET lock_timeout = '5s'"))
        connection.execute(text("SET statement_timeout = '120s'"))
        # Workers and `herd submit` migrate on start; a session lock makes concurrent starts queue up.
        connection.execute(text("SELECT pg_advisory_lock(7468279)"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            transaction_per_migration=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

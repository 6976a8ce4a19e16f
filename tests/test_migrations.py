"""Migrations: upgrade head and downgrade base on an empty database, and no drift from the schema."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command

from herd.ledger.db import alembic_config, migrate
from tests.conftest import Services


@pytest.fixture
def empty_db(services: Services) -> Iterator[str]:
    name = "herd_migration_test"
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(services.database_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def test_upgrade_check_downgrade_upgrade(empty_db: str) -> None:
    migrate(empty_db)
    assert {"jobs", "prompts", "attempts", "finals", "scores", "alembic_version"} <= tables(empty_db)
    command.check(alembic_config(empty_db))  # raises if the migrations and herd/ledger/schema.py differ
    command.downgrade(alembic_config(empty_db), "base")
    assert tables(empty_db) == {"alembic_version"}
    migrate(empty_db)
    assert "attempts" in tables(empty_db)

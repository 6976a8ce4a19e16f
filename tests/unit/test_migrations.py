"""Migrations: upgrade head and downgrade base on an empty database, and no drift from the schema."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command

from herd.ledger.db import (
    SchemaError,
    alembic_config,
    current_revision,
    ensure_current,
    head_revision,
    migrate,
)
from tests.support.harness import Services


@pytest.fixture
def empty_db(services: Services) -> Iterator[str]:
    name = f"herd_migration_test_{os.getpid()}"  # unique: checkouts may share one server
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


def test_ensure_current_names_both_revisions_and_waits_for_a_migration(empty_db: str) -> None:
    with pytest.raises(
        SchemaError, match=rf"empty schema, this Herd needs revision {head_revision()}: run `herd migrate`"
    ):
        ensure_current(empty_db)
    assert current_revision(empty_db) is None
    # A worker started beside the migration step waits for it rather than failing.
    migrating = threading.Timer(0.5, migrate, args=(empty_db,))
    migrating.start()
    ensure_current(empty_db, wait_s=60, poll_s=0.1)
    migrating.join()
    assert current_revision(empty_db) == head_revision()


def test_ensure_current_waits_for_an_unreachable_database_then_says_so() -> None:
    # Port 9 (discard) is closed here: the database is "still starting" for the whole wait.
    with pytest.raises(SchemaError, match=r"cannot reach the database after 0s"):
        ensure_current("postgresql://postgres@127.0.0.1:9/none", wait_s=0.3, poll_s=0.1)

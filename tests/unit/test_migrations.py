"""Migrations: upgrade head and downgrade base on an empty database, no drift from the schema, every
downgrade restoring exactly what the revision before it made, and revisions that stand alone."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from herd.ledger.db import (
    MIGRATIONS_DIR,
    SchemaError,
    alembic_config,
    current_revision,
    ensure_current,
    head_revision,
    migrate,
)
from herd_migrations.sqldump import read_definitions, scratch_database
from tests.support.harness import Services


@pytest.fixture
def empty_db(services: Services) -> Iterator[str]:
    with scratch_database(services.database_url) as url:
        yield url


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


# Everything a revision can make besides rows, as comparable text: tables' columns (by name: a column a
# downgrade drops and re-adds comes back last), constraints, indexes, grants (herd_reader's), then views,
# functions and triggers.
_TABLE_CATALOG = """
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
           || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || c.relname || '.' || k.conname || ' ' || pg_get_constraintdef(k.oid)
    FROM pg_constraint k
    JOIN pg_class c ON c.oid = k.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public'
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public'
    UNION ALL
    SELECT 'grant ' || g.privilege_type || ' on ' || c.relname || ' to ' || g.grantee::regrole::text
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    -- A revoke can leave the owner's default privileges spelled out: compare what others were granted.
    CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) g
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') AND g.grantee <> c.relowner
    UNION ALL
    SELECT 'grant ' || g.privilege_type || ' on schema public to ' || g.grantee::regrole::text
    FROM pg_namespace n
    CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) g
    WHERE n.nspname = 'public' AND g.grantee <> n.nspowner
    UNION ALL
    SELECT 'default grant ' || g.privilege_type || ' on ' || d.defaclobjtype::text || ' to '
           || g.grantee::regrole::text
    FROM pg_default_acl d
    CROSS JOIN LATERAL aclexplode(d.defaclacl) g
    ORDER BY 1
"""


def schema_of(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        catalog = [row[0] for row in conn.execute(_TABLE_CATALOG).fetchall()]
        definitions = [f"{d.kind} {d.name}\n{d.sql}" for d in read_definitions(conn)]
    return [line for line in catalog if "alembic_version" not in line] + definitions


def test_every_downgrade_restores_what_the_revision_before_made(empty_db: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(empty_db))
    revisions = [s.revision for s in reversed(list(script.walk_revisions()))]
    made = {"base": schema_of(empty_db)}
    for revision in revisions:
        migrate(empty_db, revision)
        made[revision] = schema_of(empty_db)
    assert made[revisions[-1]] != made["base"] and len(revisions) >= 11
    for revision, before in zip(reversed(revisions), ["base", *revisions][-2::-1], strict=True):
        command.downgrade(alembic_config(empty_db), before)
        assert schema_of(empty_db) == made[before], f"downgrading {revision} to {before}"


def test_no_revision_imports_another() -> None:
    """A revision is a frozen snapshot: its SQL is stated whole in its own file, so editing one
    revision can never change what another executes (CONTRIBUTING.md, script.py.mako)."""
    versions = MIGRATIONS_DIR / "versions"
    offenders = []
    for path in sorted(versions.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.name}: {n}" for n in names if n.startswith(("herd_migrations", "importlib"))
            ]
    assert len(list(versions.glob("0*.py"))) >= 11
    assert offenders == []

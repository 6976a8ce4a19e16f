"""Policy versions in Postgres: record, list, read, activate (migration 0005's `policies`,
`active_policies`). Text is herd.policy.spec's YAML, so a version reads, diffs and rolls back as text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from herd.policy.versioned import VersionTables

TABLES = VersionTables(
    table="policies",
    active_table="active_policies",
    id_column="policy_id",
    noun="policy",
    create_hint="herd calibrate",
    lock=7468281,
)


@dataclass(frozen=True)
class Version:
    task: str
    version: int
    text: str
    created_at: datetime
    source_job: str | None
    estimates: dict[str, Any]
    active: bool


_SELECT = """SELECT p.task, p.version, p.text, p.created_at, j.name, p.estimates,
                    a.policy_id IS NOT NULL
             FROM policies p LEFT JOIN jobs j ON j.id = p.source_job_id
             LEFT JOIN active_policies a ON a.policy_id = p.id"""


def record(
    conn: psycopg.Connection,
    task: str,
    text: str,
    source_job_id: int | None,
    estimates: dict[str, Any],
    activate: bool = True,
) -> int:
    """Store `text` as the next version of `task` (1, 2, ...) and, with `activate`, make it the one
    workers run. Returns the version. Runs in the caller's transaction."""
    row_id, version = TABLES.insert_next(
        conn, task, ("text", "source_job_id", "estimates"), (text, source_job_id, json.dumps(estimates))
    )
    if activate:
        TABLES.point(conn, task, row_id)
    return version


def versions(conn: psycopg.Connection, task: str | None = None) -> list[Version]:
    where, args = ("WHERE p.task = %s", (task,)) if task else ("", ())
    rows = conn.execute(f"{_SELECT} {where} ORDER BY p.task, p.version", args).fetchall()
    return [Version(*r) for r in rows]


def get(conn: psycopg.Connection, task: str, version: int) -> Version:
    row = conn.execute(f"{_SELECT} WHERE p.task = %s AND p.version = %s", (task, version)).fetchone()
    if row is None:
        raise TABLES.missing(conn, task, version)
    return Version(*row)


def activate(conn: psycopg.Connection, task: str, version: int) -> Version:
    """Make `version` the one workers of `task` run (within their cache TTL). Rollback = an earlier one.
    InputError (one line) if `task` has no such version."""
    TABLES.activate(conn, task, version)
    return get(conn, task, version)


def deactivate(conn: psycopg.Connection, task: str) -> bool:
    """Back to the herd file for `task`. False if no version was active."""
    return TABLES.deactivate(conn, task)

"""Policy versions in Postgres: record, list, read, activate (migration 0005's `policies`,
`active_policies`). Text is herd.policy.spec's YAML, so a version reads, diffs and rolls back as text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from herd.jobs.documents import InputError

_LOCK = 7468281  # pg_advisory_xact_lock(int, hashtext(task)): one version number at a time per task


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
    conn: psycopg.Connection, task: str, text: str, source_job_id: int | None,
    estimates: dict[str, Any], activate: bool = True,
) -> int:  # fmt: skip
    """Store `text` as the next version of `task` (1, 2, ...) and, with `activate`, make it the one
    workers run. Returns the version. Runs in the caller's transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK, task))
    row = conn.execute(
        """INSERT INTO policies (task, version, text, source_job_id, estimates)
           SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s FROM policies WHERE task = %s
           RETURNING id, version""",
        (task, text, source_job_id, json.dumps(estimates), task),
    ).fetchone()
    assert row is not None
    if activate:
        _point(conn, task, int(row[0]))
    return int(row[1])


def versions(conn: psycopg.Connection, task: str | None = None) -> list[Version]:
    where, args = ("WHERE p.task = %s", (task,)) if task else ("", ())
    rows = conn.execute(f"{_SELECT} {where} ORDER BY p.task, p.version", args).fetchall()
    return [Version(*r) for r in rows]


def get(conn: psycopg.Connection, task: str, version: int) -> Version:
    row = conn.execute(f"{_SELECT} WHERE p.task = %s AND p.version = %s", (task, version)).fetchone()
    if row is None:
        have = [v.version for v in versions(conn, task)]
        listed = ", ".join(map(str, have)) if have else "none (run `herd calibrate`)"
        raise InputError(f"task {task!r} has no policy version {version}; its versions: {listed}")
    return Version(*row)


def activate(conn: psycopg.Connection, task: str, version: int) -> Version:
    """Make `version` the one workers of `task` run (within their cache TTL). Rollback = an earlier one."""
    get(conn, task, version)
    row = conn.execute("SELECT id FROM policies WHERE task = %s AND version = %s", (task, version)).fetchone()
    assert row is not None
    _point(conn, task, int(row[0]))
    return get(conn, task, version)


def deactivate(conn: psycopg.Connection, task: str) -> bool:
    """Back to the herd file for `task`. False if no version was active."""
    return conn.execute("DELETE FROM active_policies WHERE task = %s", (task,)).rowcount == 1


def _point(conn: psycopg.Connection, task: str, policy_id: int) -> None:
    conn.execute(
        """INSERT INTO active_policies (task, policy_id) VALUES (%s, %s)
           ON CONFLICT (task) DO UPDATE SET policy_id = EXCLUDED.policy_id, activated_at = now()""",
        (task, policy_id),
    )

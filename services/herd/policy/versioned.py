"""What policy versions and router versions share: numbered per task, one active per task.

Both are a table of versions (`policies`, `routers`: id, task, version, ...) and a table naming the
active one per task (`active_policies`, `active_routers`: task, <kind>_id, activated_at), migrations
0006 and 0008. herd/policy/versions.py and herd/policy/router/versions.py keep their own columns and row
types; the numbering, the pointer and the error for a missing version live here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from herd.input_errors import InputError


@dataclass(frozen=True)
class VersionTables:
    """One kind of versioned object: its tables and how errors name it."""

    table: str  # e.g. "policies"
    active_table: str  # e.g. "active_policies"
    id_column: str  # the active table's pointer, e.g. "policy_id"
    noun: str  # "policy" / "router", in error messages
    create_hint: str  # the command that makes a first version, e.g. "herd calibrate"
    lock: int  # pg_advisory_xact_lock(lock, hashtext(task)): one version number at a time per task

    def insert_next(
        self, conn: psycopg.Connection, task: str, columns: Sequence[str], values: Sequence[object]
    ) -> tuple[int, int]:
        """Insert the next version (1, 2, ...) of `task` with `columns` = `values` (besides task and
        version). Returns (row id, version). Runs in the caller's transaction; the advisory lock
        keeps two concurrent recorders of one task from taking the same number."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (self.lock, task))
        table = sql.Identifier(self.table)
        query = sql.SQL(
            "INSERT INTO {table} (task, version, {columns}) "
            "SELECT %s, coalesce(max(version), 0) + 1, {params} FROM {table} WHERE task = %s "
            "RETURNING id, version"
        ).format(
            table=table,
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            params=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )
        row = conn.execute(query, (task, *values, task)).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def point(self, conn: psycopg.Connection, task: str, row_id: int) -> None:
        """Make row `row_id` the active version of `task`."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {active} (task, {id}) VALUES (%s, %s) "
                "ON CONFLICT (task) DO UPDATE SET {id} = EXCLUDED.{id}, activated_at = now()"
            ).format(active=sql.Identifier(self.active_table), id=sql.Identifier(self.id_column)),
            (task, row_id),
        )

    def activate(self, conn: psycopg.Connection, task: str, version: int) -> None:
        """Point `task` at `version` (an earlier one: rollback). InputError (one line) if it is absent."""
        row = conn.execute(
            sql.SQL("SELECT id FROM {table} WHERE task = %s AND version = %s").format(
                table=sql.Identifier(self.table)
            ),
            (task, version),
        ).fetchone()
        if row is None:
            raise self.missing(conn, task, version)
        self.point(conn, task, int(row[0]))

    def deactivate(self, conn: psycopg.Connection, task: str) -> bool:
        """No active version for `task`. False if none was active."""
        cur = conn.execute(
            sql.SQL("DELETE FROM {active} WHERE task = %s").format(active=sql.Identifier(self.active_table)),
            (task,),
        )
        return cur.rowcount == 1

    def missing(self, conn: psycopg.Connection, task: str, version: int) -> InputError:
        """The one-line error for a version `task` does not have, listing the ones it has."""
        rows = conn.execute(
            sql.SQL("SELECT version FROM {table} WHERE task = %s ORDER BY version").format(
                table=sql.Identifier(self.table)
            ),
            (task,),
        ).fetchall()
        listed = ", ".join(str(r[0]) for r in rows) if rows else f"none (run `{self.create_hint}`)"
        return InputError(f"task {task!r} has no {self.noun} version {version}; its versions: {listed}")

"""Router versions in Postgres: record, list, read, activate (migration 0008's `routers`,
`active_routers`), and the prompt texts a router trains on.

Modelled on herd/policy/versions.py. A router is stored as its JSON text (Router.to_json) and read back
with Router.from_json, which uses json and numpy only and checks the text's sha256 against its
parameters: nothing read from the database is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from herd.input_errors import InputError
from herd.policy.router.model import Router
from herd.policy.versioned import VersionTables

TABLES = VersionTables(
    table="routers",
    active_table="active_routers",
    id_column="router_id",
    noun="router",
    create_hint="herd router train",
    lock=7468282,
)


@dataclass(frozen=True)
class RouterVersion:
    task: str
    version: int
    json: str
    encoder: str
    created_at: datetime
    source_job: str | None
    figures: dict[str, Any]
    active: bool

    def router(self) -> Router:
        """The Router (RouterError if the stored text was altered)."""
        return Router.from_json(self.json)


_SELECT = """SELECT r.task, r.version, r.json, r.encoder, r.created_at, j.name, r.figures,
                    a.router_id IS NOT NULL
             FROM routers r LEFT JOIN jobs j ON j.id = r.source_job_id
             LEFT JOIN active_routers a ON a.router_id = r.id"""


def encoder_name(router: Router) -> str:
    """What the router's features are: "tfidf", "tfidf-char" or the sentence encoder's name."""
    if router.encoder is not None:
        return router.encoder
    assert router.features is not None
    return "tfidf" if router.features.analyzer == "word" else "tfidf-char"


def record(
    conn: psycopg.Connection,
    router: Router,
    source_job_id: int | None,
    figures: dict[str, Any],
    activate: bool = True,
) -> int:
    """Store `router` as the next version of its task (1, 2, ...) and, with `activate`, make it the one
    `herd submit` routes with. Returns the version. Runs in the caller's transaction."""
    task = router.task
    row_id, version = TABLES.insert_next(
        conn,
        task,
        ("json", "encoder", "source_job_id", "figures"),
        (router.to_json(), encoder_name(router), source_job_id, json.dumps(figures)),
    )
    if activate:
        TABLES.point(conn, task, row_id)
    return version


def versions(conn: psycopg.Connection, task: str | None = None) -> list[RouterVersion]:
    where, args = ("WHERE r.task = %s", (task,)) if task else ("", ())
    rows = conn.execute(f"{_SELECT} {where} ORDER BY r.task, r.version", args).fetchall()
    return [RouterVersion(*r) for r in rows]


def get(conn: psycopg.Connection, task: str, version: int | None = None) -> RouterVersion:
    """Version `version` of `task`'s router, or the active one when None. InputError (one line) if absent."""
    if version is None:
        row = conn.execute(f"{_SELECT} WHERE r.task = %s AND a.router_id IS NOT NULL", (task,)).fetchone()
        if row is None:
            raise InputError(
                f"task {task!r} has no active router: give a version, or run `herd router train`"
            )
        return RouterVersion(*row)
    row = conn.execute(f"{_SELECT} WHERE r.task = %s AND r.version = %s", (task, version)).fetchone()
    if row is None:
        raise TABLES.missing(conn, task, version)
    return RouterVersion(*row)


def load_active(conn: psycopg.Connection, task: str) -> tuple[int, Router] | None:
    """The active (version, Router) of `task`, or None: prompts enter where the policy says."""
    row = conn.execute(
        """SELECT r.version, r.json FROM active_routers a JOIN routers r ON r.id = a.router_id
           WHERE a.task = %s""",
        (task,),
    ).fetchone()
    return None if row is None else (int(row[0]), Router.from_json(row[1]))


def activate(conn: psycopg.Connection, task: str, version: int) -> RouterVersion:
    """Make `version` the router `herd submit` uses for `task` (an earlier one: rollback).
    InputError (one line) if `task` has no such version."""
    TABLES.activate(conn, task, version)
    return get(conn, task, version)


def deactivate(conn: psycopg.Connection, task: str) -> bool:
    """No router for `task`: every prompt enters at the policy's entry. False if none was active."""
    return TABLES.deactivate(conn, task)


def prompt_texts(conn: psycopg.Connection, prompt_ids: Sequence[int] | np.ndarray) -> list[str]:
    """The stored text of each prompt id, in the given order (what `herd submit` routes on)."""
    rows = conn.execute(
        "SELECT id, text FROM prompts WHERE id = ANY(%s)", ([int(i) for i in prompt_ids],)
    ).fetchall()
    by_id = {int(r[0]): str(r[1]) for r in rows}
    missing = [int(i) for i in prompt_ids if int(i) not in by_id]
    if missing:
        raise InputError(f"prompts {missing[:5]} of the calibration data are no longer in the ledger")
    return [by_id[int(i)] for i in prompt_ids]

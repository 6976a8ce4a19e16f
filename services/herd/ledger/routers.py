"""Router versions in Postgres: record, list, read, activate (migration 0008's `routers`,
`active_routers`), and the prompt texts a router trains on.

Modelled on herd/ledger/policies.py. A router is stored as its JSON text (Router.to_json) and read back
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

from herd.jobs.documents import InputError
from herd.policy.router.model import Router

_LOCK = 7468282  # pg_advisory_xact_lock(int, hashtext(task)): one version number at a time per task


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
    conn: psycopg.Connection, router: Router, source_job_id: int | None, figures: dict[str, Any],
    activate: bool = True,
) -> int:  # fmt: skip
    """Store `router` as the next version of its task (1, 2, ...) and, with `activate`, make it the one
    `herd submit` routes with. Returns the version. Runs in the caller's transaction."""
    task = router.task
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK, task))
    row = conn.execute(
        """INSERT INTO routers (task, version, json, encoder, source_job_id, figures)
           SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s FROM routers WHERE task = %s
           RETURNING id, version""",
        (task, router.to_json(), encoder_name(router), source_job_id, json.dumps(figures), task),
    ).fetchone()
    assert row is not None
    if activate:
        _point(conn, task, int(row[0]))
    return int(row[1])


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
        have = [v.version for v in versions(conn, task)]
        listed = ", ".join(map(str, have)) if have else "none (run `herd router train`)"
        raise InputError(f"task {task!r} has no router version {version}; its versions: {listed}")
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
    """Make `version` the router `herd submit` uses for `task` (an earlier one: rollback)."""
    get(conn, task, version)
    row = conn.execute("SELECT id FROM routers WHERE task = %s AND version = %s", (task, version)).fetchone()
    assert row is not None
    _point(conn, task, int(row[0]))
    return get(conn, task, version)


def deactivate(conn: psycopg.Connection, task: str) -> bool:
    """No router for `task`: every prompt enters at the policy's entry. False if none was active."""
    return conn.execute("DELETE FROM active_routers WHERE task = %s", (task,)).rowcount == 1


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


def _point(conn: psycopg.Connection, task: str, router_id: int) -> None:
    conn.execute(
        """INSERT INTO active_routers (task, router_id) VALUES (%s, %s)
           ON CONFLICT (task) DO UPDATE SET router_id = EXCLUDED.router_id, activated_at = now()""",
        (task, router_id),
    )

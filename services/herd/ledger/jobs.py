"""A job by its name: the one lookup every command that takes `--job` starts with."""

from __future__ import annotations

import psycopg

from herd.errors import UserError


class UnknownJobError(UserError, LookupError):
    """No job has the name given (`herd status`, `herd calibrate`, `herd score`, ...)."""


def job_id(conn: psycopg.Connection, name: str) -> tuple[int, str]:
    """(job id, task name) of the job called `name`. Raises UnknownJobError when there is none."""
    row = conn.execute("SELECT id, task FROM jobs WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise UnknownJobError(f"no job named {name!r}")
    return int(row[0]), str(row[1])

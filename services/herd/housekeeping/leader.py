"""The housekeeper's leader lock: a Postgres session advisory lock on a connection of its own.

Why this and not Celery beat: beat only schedules; its tasks would still need a worker to run them
and Redis to carry them, and re-sending what a broker outage lost must not depend on the broker
(nor on a worker: KEDA scales them to zero). Beat has no leader election either (two beats send
everything twice) and keeps its schedule in a file. Postgres is already the one thing every Herd
process needs, and a session lock ends with its session: a leader that dies, or loses its
connection, frees the lock at once, and a standby replica takes it at its next check.

The lock is for economy, not correctness: every piece of housekeeping takes its own advisory locks
(herd/housekeeping/work.py), so two leaders for a moment (a partition the old leader has not noticed
yet) only do the work twice.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from herd.ledger.db import connection_options

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of `herd housekeeper` ("herdkeep"); shares.py and steps.py use others.
LEADER_KEY = 0x68657264_6B656570


class LeaderLock:
    """`check()` once per interval: True while this process holds the lock (taking it if free)."""

    def __init__(self, url: str, *, key: int = LEADER_KEY, timeout_s: float = 10.0) -> None:
        self.url = url
        self.key = key
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self.held = False

    def check(self) -> bool:
        """Raises psycopg.OperationalError when the database cannot be reached (then the lock is not
        held: a session lock ends with its connection)."""
        try:
            conn = self._connection()
            if self.held:
                conn.execute("SELECT 1")  # the session is alive, so its lock is still ours
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self.held = bool(row and row[0])
                if self.held:
                    log.info("housekeeper: leading (advisory lock %#x taken)", self.key)
            return self.held
        except psycopg.Error:
            if self.held:
                log.warning("housekeeper: lost the database connection; no longer leading")
            self.close()
            raise

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # A dead peer is noticed within the liveness options' bound (herd/ledger/db.py), not the
            # kernel's minutes or hours, and a check never hangs on a stuck server.
            self._conn = psycopg.connect(
                self.url,
                **connection_options(  # type: ignore[arg-type]  # connection options
                    autocommit=True,
                    connect_timeout=int(self.timeout_s),
                    options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
                ),
            )
            self.held = False
        return self._conn

    def close(self) -> None:
        """Give the lock up: unlock at once (a closed session releases it too, but only once its
        backend has exited), then close the connection."""
        held, self.held = self.held, False
        if self._conn is not None:
            try:
                if held and not self._conn.closed:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except psycopg.Error:
                pass  # the session is gone, and its lock with it
            try:
                self._conn.close()
            finally:
                self._conn = None

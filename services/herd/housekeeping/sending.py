"""Publish after the commit; when the broker refuses, leave the prompts due again at the next tick.

The one way Herd sends committed dispatches: a step's (herd_workers/tasks.py), a housekeeping tick's
(work.py), `herd submit`'s first window (herd/cli/jobs.py), the batch keeper's (herd/api/keeper.py) and
`herd demo`'s (herd/local/demo/run.py). A message that could not be sent is not a lost prompt: the
prompt is `queued` in Postgres, and `ledger.mark_due` moves its `enqueued_at` back so the next tick's
stale sweep re-sends it, instead of a whole stale period later (what a claim's fresh `enqueued_at`
would otherwise make it wait).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import psycopg

from herd.broker_errors import PublishError
from herd.ledger import steps as ledger
from herd.vocabulary import Dispatch

log = logging.getLogger(__name__)

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
# herd.queues.publish, or a test's double; what it returns is not used (the unsent come with its error).
Publish = Callable[[Sequence[Dispatch]], object]


def send(connect: Connect, dispatches: Sequence[Dispatch], *, stale_after_s: float, publish: Publish) -> int:
    """Publish committed `dispatches`; returns how many were NOT sent (0: all went out).

    On PublishError the unsent prompts are marked due (`ledger.mark_due`, with this process's
    `stale_after_s`, seconds) on a connection from `connect`. If the database is unreachable too,
    they keep their claim time and wait one stale period, as after a crash between commit and
    publish. Never raises for the broker's or the database's sake: the caller's commit stands."""
    if not dispatches:
        return 0
    try:
        publish(dispatches)  # herd.queues.publish, passed in: this module needs no broker
        return 0
    except PublishError as exc:
        unsent = list(exc.unsent)
        cause = exc.__cause__
    try:
        with connect() as conn:
            due = ledger.mark_due(conn, unsent, stale_after_s)
    except psycopg.Error as db_exc:
        log.warning(
            "%d message(s) not sent (%r), and the database did not take them back (%s): they are "
            "re-sent after the stale period",
            len(unsent),
            cause,
            db_exc,
        )
        return len(unsent)
    log.warning(
        "%d message(s) not sent (%r); %d prompt(s) due again at the next tick", len(unsent), cause, due
    )
    return len(unsent)

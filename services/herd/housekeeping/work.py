"""One tick of housekeeping, split in its two independent halves.

`dispatch`: re-send prompts `queued` for longer than the stale period (their message may be lost),
top the dispatch window up from `pending`, release the held candidates of idle budget jobs; one
transaction, then publish (herd.housekeeping.sending: what is not sent is due again next tick).

`seal`: fill the stored cost shares (herd.ledger.shares) and seal every finished job whose shares are
all final. An endpoint's time may be closed only where no request still in flight overlaps it (one
that did would arrive late and force a rewind, docs/cost-model.md). So the fill closes time up to:
- now, when no prompt is `queued` anywhere: nothing is in flight (a prompt stays `queued` until its
  step is recorded);
- else the longest a request can last (`longest_request_s`: the herd file's largest `timeout_s`, plus
  a margin) behind now, or `cost_share_horizon_s` if that is shorter.
Either way a finished job is sealed within about a minute of its last attempt with the herd's
default timeouts (60 s), not `cost_share_horizon_s` (300 s) later: the morning's report reads stored
rows. Correctness never rests on this bound: a request that outlasts it only causes a rewind.

Workers run both from their pump (opportunistic, with a short fill budget); `herd housekeeper` runs
them in two threads so a long seal never delays a re-send. Any number of them may run at once: the
window top-up, the fill and each seal take Postgres advisory locks, and stale prompts are claimed
with SKIP LOCKED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from herd.herdfile.model import HerdConfig
from herd.housekeeping.sending import Connect, Publish, send
from herd.jobs.references import fail_unknown_queued
from herd.ledger import shares
from herd.ledger import steps as ledger
from herd.settings import Settings
from herd.vocabulary import Dispatch

# Seconds added to the longest model timeout: recording an attempt after its call returns, clock jitter.
REQUEST_MARGIN_S = 10.0
# Shares one `seal` tick may store, and (with what it stored) jobs' shares it may seal (one job past it
# at most): the work of a tick bounded whatever the machine's load, besides `fill_budget_s`. 20,000 is
# a few seconds of fill on a busy 2-core machine (docs/cost-model.md); a backlog takes more ticks.
TICK_ATTEMPTS = 20_000

# Release of idle budget jobs' held candidates (Pipeline.release_budgets), inside the caller's transaction.
Release = Callable[[psycopg.Connection], list[Dispatch]]


@dataclass(frozen=True)
class Dispatched:
    """What one dispatch half did: prompts re-sent as stale, prompts let into the window (pending
    claimed, budget candidates released), and messages of either that were not sent (left due)."""

    resent: int
    admitted: int
    unsent: int


class Housekeeping:
    """The two halves over `connect` (autocommit connections), sending with `publish`
    (herd.queues.publish). `release`: Pipeline.release_budgets,
    or None where no pipeline is at hand (then idle budget jobs wait for one that has it).
    `fill_budget_s`: seconds one `seal` may spend filling and sealing before it returns (the next
    tick goes on). `longest_request_s`: see the module docstring (`request_bound` computes it from a
    herd file); None: `cost_share_horizon_s` alone. `herd`: the herd file, whose missing models and
    tasks fail their stale queued prompts instead of being re-sent (herd.jobs.references); None: no
    such check."""

    def __init__(
        self,
        connect: Connect,
        settings: Settings,
        *,
        release: Release | None = None,
        publish: Publish,
        fill_budget_s: float = 1.0,
        longest_request_s: float | None = None,
        herd: HerdConfig | None = None,
    ) -> None:
        self.connect = connect
        self.settings = settings
        self.release = release
        self.fill_budget_s = fill_budget_s
        self.longest_request_s = longest_request_s
        self.publish = publish
        self.herd = herd

    def dispatch(self) -> Dispatched:
        """Raises psycopg errors (the database is unreachable); broker failures never leave here."""
        window = self.settings.dispatch_window
        with self.connect() as conn, conn.transaction():
            if self.herd is not None:
                # Stale prompts queued at a model the herd file lacks have no worker: fail them with
                # that reason rather than re-send them to a queue nobody reads.
                fail_unknown_queued(conn, self.herd, self.settings.stale_after_s)
            stale = ledger.reclaim_stale(conn, self.settings.stale_after_s, window)
            fresh = ledger.top_up(conn, window)
            released = self.release(conn) if self.release is not None else []
        todo = stale + fresh + released
        unsent = send(self.connect, todo, stale_after_s=self.settings.stale_after_s, publish=self.publish)
        return Dispatched(len(stale), len(fresh) + len(released), unsent)

    def seal(self) -> shares.FillResult | None:
        """One bounded fill and seal (`fill_budget_s` seconds, TICK_ATTEMPTS shares); None when stored
        shares are off (`cost_share_horizon_s` 0).
        Raises psycopg errors."""
        if self.settings.cost_share_horizon_s <= 0:
            return None
        with self.connect() as conn:
            horizon_s = closing_horizon(conn, self.settings, self.longest_request_s)
            return shares.fill(
                conn,
                horizon_s=horizon_s,
                budget_s=self.fill_budget_s,
                slice_attempts=5000,
                max_attempts=TICK_ATTEMPTS,
            )


def request_bound(herd: HerdConfig) -> float:
    """The longest a request of `herd` can be busy at its endpoint, seconds: its largest `timeout_s`
    (a client gives up after it) plus REQUEST_MARGIN_S."""
    return max((model.timeout_s for model in herd.models.values()), default=0.0) + REQUEST_MARGIN_S


def closing_horizon(conn: psycopg.Connection, settings: Settings, longest_request_s: float | None) -> float:
    """How far behind now (seconds, database clock) endpoint time may be closed: see the module
    docstring."""
    if ledger.count_queued(conn) == 0:
        return 0.0  # nothing in flight anywhere: every endpoint's time is final up to now
    if longest_request_s is not None:
        return min(settings.cost_share_horizon_s, longest_request_s)
    return settings.cost_share_horizon_s


def seal_job(conn: psycopg.Connection, job_id: int, settings: Settings, *, pause_s: float = 0.2) -> bool:
    """Seal finished job `job_id` now if its shares can be final (what `herd report` does before it
    reads: a report is read many times, a job sealed once). Fills every endpoint's time up to the
    closing horizon in fills of one second each (each its own transaction: attempt inserts of running
    jobs wait for a fill's lock on cost_share_marks, never for the whole catch-up), waiting `pause_s`
    seconds while another process fills, then seals this job alone. True if the job is sealed
    afterwards; False if it is not finished, its last attempts are too recent while other prompts
    run, or stored shares are off. Raises psycopg errors (InsufficientPrivilege for a read-only role)."""
    if shares.is_sealed(conn, job_id):
        return True
    if settings.cost_share_horizon_s <= 0:
        return False
    horizon_s = closing_horizon(conn, settings, None)
    while True:
        done = shares.fill(conn, horizon_s=horizon_s, budget_s=1.0, slice_attempts=5000, job=job_id)
        if done.sealed or shares.is_sealed(conn, job_id):
            return True
        if done.busy:
            time.sleep(pause_s)  # the housekeeper or a worker is filling: it may seal the job too
        elif done.stored == 0 and done.carried == 0 and done.rewound == 0:
            return False  # filled up to the horizon, and the job still cannot be sealed

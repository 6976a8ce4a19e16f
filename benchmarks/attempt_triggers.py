"""What migration 0009's statement triggers on `attempts` cost the hot path, with and without, one run.

    python -m benchmarks.attempt_triggers [--n 2000] [--blocks 4] [--ledger 100000]

Prints figures only; docs/scale.md has the latest. Services from HERD_DATABASE_URL when set (it must
name a scratch database: its ledger is truncated), else an embedded Postgres under a temporary
HERD_HOME (tests/support/harness.py). Postgres must run on this machine (its backend's CPU is read).

0009 notes late arrivals with four statement-level AFTER triggers on `attempts` (INSERT, DELETE and
UPDATE twice, old and new rows, each with a transition table) running `cost_shares_note()`: a
`LOCK TABLE cost_share_marks IN ROW EXCLUSIVE MODE`, an upsert of the endpoint's mark and a join
against it. A worker inserts one attempt per step (herd.ledger.steps.insert_attempt, in its own
autocommit transaction, as `record_final` does) and sometimes updates one (`mark_escalated`).

Method: a ledger of `--ledger` synthetic attempts (benchmarks/_lib/synthetic_ledger.py) with every
share stored (herd.ledger.shares.fill), so the endpoints have marks and new attempts, finishing now,
are not late: the common case. Then `--blocks` rounds, alternating, of `--n` single-row INSERTs (the
real insert_attempt) followed by `--n` single-row UPDATEs (the real mark_escalated), once with the
triggers enabled and once with them disabled (ALTER TABLE ... DISABLE TRIGGER, restored at the end).
Prints, per statement, the median over blocks of the client's wall time and of the Postgres
backend's CPU (psutil on pg_backend_pid()), with and without; all of it twice, with the session's
synchronous_commit off (the statement's own cost) and on (as workers run: the commit waits for its
WAL flush, which on a shared disk is milliseconds and hides the difference).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import LiteralString

import psycopg
from psycopg import sql

from benchmarks._lib.cpu import load_average, process_cpu
from benchmarks._lib.entry import run, work_dir
from benchmarks._lib.synthetic_ledger import load
from herd.ledger.shares import fill
from herd.ledger.steps import NewAttempt, insert_attempt, mark_escalated
from tests.support.harness import services, truncate

TRIGGERS = ("cost_shares_insert", "cost_shares_delete", "cost_shares_update_old", "cost_shares_update_new")
STATEMENTS = ("INSERT one attempt", "UPDATE one attempt")


@dataclass(frozen=True)
class Block:
    """Seconds per statement over one block: wall clock (client) and backend CPU."""

    insert_wall: float
    insert_cpu: float
    update_wall: float
    update_cpu: float


@dataclass(frozen=True)
class Figures:
    late: int  # late arrivals noted (expected 0: every new attempt finishes now)
    medians: dict[tuple[str, bool], Block]  # over blocks, by (synchronous_commit, triggers on)


def set_triggers(admin: psycopg.Connection, enabled: bool) -> None:
    verb = sql.SQL("ENABLE" if enabled else "DISABLE")
    for name in TRIGGERS:
        admin.execute(sql.SQL("ALTER TABLE attempts {} TRIGGER {}").format(verb, sql.Identifier(name)))


def block(conn: psycopg.Connection, backend_pid: int, prompt_ids: list[int]) -> Block:
    """Insert one attempt per prompt, then update each."""
    ids = []
    cpu0, t0 = process_cpu(backend_pid, children=False), time.perf_counter()
    for prompt_id in prompt_ids:
        now = datetime.now(UTC)
        attempt = NewAttempt(
            prompt_id=prompt_id,
            model="small",
            stage="answer",
            round=0,
            status="ok",
            answer="ok",
            endpoint="http://small-0",
            latency_s=0.004,
            busy_s=0.004,
            gpu_count=1,
            usd_per_gpu_hour=Decimal("0.8"),
            started_at=now,
            finished_at=now,
        )
        ids.append(insert_attempt(conn, attempt).id)
    cpu1, t1 = process_cpu(backend_pid, children=False), time.perf_counter()
    for attempt_id in ids:
        mark_escalated(conn, attempt_id)
    cpu2, t2 = process_cpu(backend_pid, children=False), time.perf_counter()
    n = len(prompt_ids)
    return Block((t1 - t0) / n, (cpu1 - cpu0) / n, (t2 - t1) / n, (cpu2 - cpu1) / n)


def one(conn: psycopg.Connection, query: LiteralString) -> int:
    """The integer in the first column of the one row `query` returns."""
    row = conn.execute(query).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return int(row[0])


def prepare(admin: psycopg.Connection, ledger: int, prompts: int) -> tuple[int, list[int]]:
    """An emptied ledger loaded with `ledger` synthetic attempts, every share stored, and `prompts`
    queued prompts to attach the timed attempts to: (shares stored, prompt ids)."""
    truncate(admin)
    load(admin, ledger, endpoints=4, jobs=2)
    while fill(admin, horizon_s=300, budget_s=60).stored:
        pass
    shares = one(admin, "SELECT count(*) FROM cost_shares")
    job_id = one(
        admin, "INSERT INTO jobs (name, task, entry_model) VALUES ('trig', 'qa', 'small') RETURNING id"
    )
    rows = admin.execute(
        """INSERT INTO prompts (job_id, doc_key, text, content_hash, state, model)
           SELECT %s, 't' || i, 'q', md5('t' || i), 'queued', 'small'
           FROM generate_series(1, %s) i RETURNING id""",
        (job_id, prompts),
    ).fetchall()
    admin.execute("VACUUM ANALYZE")
    return shares, [int(r[0]) for r in rows]


def time_blocks(
    admin: psycopg.Connection, conn: psycopg.Connection, prompt_ids: list[int], n: int, blocks: int
) -> dict[tuple[str, bool], Block]:
    """Blocks of `n` statements on `conn`, triggers on and off alternating, at each synchronous_commit;
    the medians over blocks. The triggers are enabled again at the end."""
    backend = one(conn, "SELECT pg_backend_pid()")
    results: dict[tuple[str, bool], list[Block]] = {}
    try:
        at = 0
        for sync in ("off", "on"):
            conn.execute(sql.SQL("SET synchronous_commit = {}").format(sql.SQL(sync)))
            for _ in range(blocks):
                for enabled in (True, False):
                    set_triggers(admin, enabled)
                    results.setdefault((sync, enabled), []).append(
                        block(conn, backend, prompt_ids[at : at + n])
                    )
                    at += n
    finally:
        set_triggers(admin, True)
    names = [f.name for f in fields(Block)]
    return {
        key: Block(*(statistics.median(getattr(b, name) for b in v) for name in names))
        for key, v in results.items()
    }


def lines(f: Figures) -> list[str]:
    out = [f"late arrivals noted: {f.late} (expected 0: every new attempt finishes now)"]
    for sync in ("off", "on"):
        on, off = f.medians[(sync, True)], f.medians[(sync, False)]  # seconds; printed in µs
        out.append(f"synchronous_commit {sync}:")
        for what, (w1, c1, w0, c0) in zip(
            STATEMENTS,
            [
                [x * 1e6 for x in (on.insert_wall, on.insert_cpu, off.insert_wall, off.insert_cpu)],
                [x * 1e6 for x in (on.update_wall, on.update_cpu, off.update_wall, off.update_cpu)],
            ],
            strict=True,
        ):
            out.append(
                f"  {what:<20} wall {w1:7.0f} us with triggers, {w0:7.0f} us without (+{w1 - w0:.0f} us, "
                f"{w1 / w0:.2f}x); backend CPU {c1:6.0f} us vs {c0:6.0f} us (+{c1 - c0:.0f} us)"
            )
    return out


def parser(prog: str, doc: str | None, n: int, ledger: int, blocks_are: str) -> argparse.ArgumentParser:
    """The options this benchmark and benchmarks.escalation_trigger share: statements per block,
    blocks (`blocks_are` says what alternates in one), the synthetic ledger's size."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{prog}", description=(doc or "").split("\n\n")[0])
    p.add_argument("--n", type=int, default=n, help="single-row statements per block")
    p.add_argument("--blocks", type=int, default=4, help=f"rounds of ({blocks_are})")
    p.add_argument("--ledger", type=int, default=ledger, help="synthetic attempts loaded first")
    return p


@contextmanager
def prepared(
    prefix: str, ledger: int, prompts: int, what: str
) -> Iterator[tuple[str, psycopg.Connection, psycopg.Connection, list[int]]]:
    """Services (HERD_DATABASE_URL, else embedded under a temporary folder named `prefix`...), and on
    them `prepare`'s ledger: (database URL, an admin connection, the timed connection, prompt ids).
    Prints the ledger's line, `what` the blocks time, and the load average."""
    with work_dir(prefix) as work, services(work / "home") as svc:
        url = svc.database_url
        with psycopg.connect(url, autocommit=True) as admin, psycopg.connect(url, autocommit=True) as conn:
            shares, prompt_ids = prepare(admin, ledger, prompts)
            print(
                f"ledger: {ledger} synthetic attempts, {shares} shares stored; {what}; "
                f"load average {load_average():.2f}",
                flush=True,
            )
            yield url, admin, conn, prompt_ids


def main(argv: list[str] | None = None) -> int:
    args = parser("attempt_triggers", __doc__, 2000, 100_000, "with, without").parse_args(argv)
    what = f"{args.blocks} x {args.n} statements each way"
    with prepared("herd-triggers-", args.ledger, args.n * args.blocks * 4, what) as (
        _,
        admin,
        conn,
        prompt_ids,
    ):
        medians = time_blocks(admin, conn, prompt_ids, args.n, args.blocks)
        late = one(admin, "SELECT count(*) FROM cost_share_late")
    print("\n".join(lines(Figures(late, medians))))
    print(f"load average after: {load_average():.2f}")
    return 0


if __name__ == "__main__":
    run(main)

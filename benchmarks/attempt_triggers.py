"""What migration 0009's statement triggers on `attempts` cost the hot path, with and without, one run.

    HERD_DATABASE_URL=postgresql://.../scratch python benchmarks/attempt_triggers.py [--n 2000] [--blocks 4]

Truncates the ledger tables of the database it is given: never point it at data you need.

0009 notes late arrivals with four statement-level AFTER triggers on `attempts` (INSERT, DELETE and
UPDATE twice, old and new rows, each with a transition table) running `cost_shares_note()`: a
`LOCK TABLE cost_share_marks IN ROW EXCLUSIVE MODE`, an upsert of the endpoint's mark and a join
against it. A worker inserts one attempt per step (herd.ledger.steps.insert_attempt, in its own
autocommit transaction, as `record_final` does) and sometimes updates one (`mark_escalated`).

Method: a ledger of `--ledger` synthetic attempts (benchmarks/ledger.py) with every share stored
(herd.ledger.shares.fill), so the endpoints have marks and new attempts, finishing now, are not late:
the common case. Then `--blocks` rounds, alternating, of `--n` single-row INSERTs (the real
insert_attempt) followed by `--n` single-row UPDATEs (the real mark_escalated), once with the
triggers enabled and once with them disabled (ALTER TABLE ... DISABLE TRIGGER, restored at the end).
Prints, per statement, the median over blocks of the client's wall time and of the Postgres
backend's CPU (psutil on pg_backend_pid(); Postgres must run on this machine), with and without; all of
it twice, with the session's synchronous_commit off (the statement's own cost) and on (as workers run:
the commit waits for its WAL flush, which on a shared disk is milliseconds and hides the difference).

Measured 2026-11-30, `--n 1000 --blocks 4 --ledger 50000`, 2 cores shared (load average 4.4): with
synchronous_commit off, INSERT 400 vs 308 us wall with/without triggers, backend CPU 140 vs 100 us;
UPDATE 277 vs 139 us, CPU 120 vs 60 us. With it on (as workers run), INSERT 2167 vs 527 us, CPU 310
vs 215 us; UPDATE 1083 vs 518 us, CPU 240 vs 150 us. About 0.1 ms of Postgres CPU per statement;
docs/scale.md puts it beside the ~1.2 ms of Postgres CPU per attempt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ledger import load  # noqa: E402
from herd.ledger.db import migrate  # noqa: E402
from herd.ledger.shares import fill  # noqa: E402
from herd.ledger.steps import NewAttempt, insert_attempt, mark_escalated  # noqa: E402

TRIGGERS = ("cost_shares_insert", "cost_shares_delete", "cost_shares_update_old", "cost_shares_update_new")
RESET = (
    "TRUNCATE finals, attempts, prompts, jobs, cost_shares, cost_share_carry, cost_share_cuts, "
    "cost_share_marks, cost_share_late RESTART IDENTITY CASCADE"
)


def set_triggers(admin: psycopg.Connection, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    for name in TRIGGERS:
        admin.execute(f"ALTER TABLE attempts {verb} TRIGGER {name}")


def block(
    conn: psycopg.Connection, backend: psutil.Process, prompt_ids: list[int]
) -> tuple[float, float, float, float]:
    """Insert one attempt per prompt, then update each: (insert wall, insert cpu, update wall, update cpu),
    each in seconds per statement."""
    ids = []
    cpu0, t0 = _cpu(backend), time.perf_counter()
    for prompt_id in prompt_ids:
        now = datetime.now(UTC)
        row = insert_attempt(
            conn,
            NewAttempt(
                prompt_id=prompt_id, model="small", stage="answer", round=0, status="ok", answer="ok",
                endpoint="http://small-0", latency_s=0.004, busy_s=0.004, gpu_count=1,
                usd_per_gpu_hour=Decimal("0.8"), started_at=now, finished_at=now,
            ),
        )  # fmt: skip
        ids.append(row.id)
    cpu1, t1 = _cpu(backend), time.perf_counter()
    for attempt_id in ids:
        mark_escalated(conn, attempt_id)
    cpu2, t2 = _cpu(backend), time.perf_counter()
    n = len(prompt_ids)
    return (t1 - t0) / n, (cpu1 - cpu0) / n, (t2 - t1) / n, (cpu2 - cpu1) / n


def one(conn: psycopg.Connection, query: str) -> int:
    """The integer in the first column of the one row `query` returns."""
    row = conn.execute(query.encode()).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return int(row[0])


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="single-row statements per block")
    parser.add_argument("--blocks", type=int, default=4, help="rounds of (with, without)")
    parser.add_argument("--ledger", type=int, default=100_000, help="synthetic attempts loaded first")
    args = parser.parse_args()
    url = os.environ.get("HERD_DATABASE_URL")
    if not url:
        print("HERD_DATABASE_URL must name a scratch database (its ledger is truncated)", file=sys.stderr)
        return 2
    migrate(url)
    with psycopg.connect(url, autocommit=True) as admin, psycopg.connect(url, autocommit=True) as conn:
        admin.execute(RESET)
        load(admin, args.ledger, endpoints=4, jobs=2)
        while fill(admin, horizon_s=300, budget_s=60).stored:
            pass
        filled = one(admin, "SELECT count(*) FROM cost_shares")
        job = admin.execute(
            "INSERT INTO jobs (name, task, entry_model) VALUES ('trig', 'qa', 'small') RETURNING id"
        )
        job_id = job.fetchone()[0]  # type: ignore[index]  # RETURNING always gives the row
        total = args.n * args.blocks * 4
        prompt_ids = [
            int(r[0])
            for r in admin.execute(
                """INSERT INTO prompts (job_id, doc_key, text, content_hash, state, model)
                   SELECT %s, 't' || i, 'q', md5('t' || i), 'queued', 'small'
                   FROM generate_series(1, %s) i RETURNING id""",
                (job_id, total),
            ).fetchall()
        ]
        admin.execute("VACUUM ANALYZE")
        backend = psutil.Process(one(conn, "SELECT pg_backend_pid()"))
        print(f"ledger: {args.ledger} synthetic attempts, {filled} shares stored; ", end="")
        print(f"{args.blocks} x {args.n} statements each way; load average {os.getloadavg()[0]:.2f}")
        results: dict[tuple[str, bool], list[tuple[float, float, float, float]]] = {}
        try:
            at = 0
            for sync in ("off", "on"):
                conn.execute(f"SET synchronous_commit = {sync}".encode())
                for _ in range(args.blocks):
                    for enabled in (True, False):
                        set_triggers(admin, enabled)
                        rows = prompt_ids[at : at + args.n]
                        results.setdefault((sync, enabled), []).append(block(conn, backend, rows))
                        at += args.n
        finally:
            set_triggers(admin, True)
        late = one(admin, "SELECT count(*) FROM cost_share_late")
    print(f"late arrivals noted: {late} (expected 0: every new attempt finishes now)")
    med = {k: [statistics.median(r[i] for r in v) * 1e6 for i in range(4)] for k, v in results.items()}
    for sync in ("off", "on"):
        print(f"synchronous_commit {sync}:")
        for i, what in ((0, "INSERT one attempt"), (2, "UPDATE one attempt")):
            on, off = med[(sync, True)], med[(sync, False)]
            print(
                f"  {what:<20} wall {on[i]:7.0f} us with triggers, {off[i]:7.0f} us without "
                f"(+{on[i] - off[i]:.0f} us, {on[i] / off[i]:.2f}x); backend CPU {on[i + 1]:6.0f} us vs "
                f"{off[i + 1]:6.0f} us (+{on[i + 1] - off[i + 1]:.0f} us)"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

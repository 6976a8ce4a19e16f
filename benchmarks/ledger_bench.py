"""Cost views over a large ledger: the full sweep (pre-0009 views) against stored shares and sealed jobs.

    python benchmarks/ledger_bench.py [--attempts 1000000] [--jobs N] [--keep] [--skip-old]

Uses the Postgres server of HERD_DATABASE_URL (required) but its own database `<its name>_ledger_bench`,
created, migrated, loaded by benchmarks/ledger.py, and dropped at the end unless --keep. Prints, for
each query, the old views' time beside the new ones', measured in the same run on the same rows:

1. `SELECT sum(cost_usd) FROM job_costs` (every job: the whole ledger);
2. `SELECT * FROM job_model_costs WHERE job = ...` (one job);
3. `herd report` for one job (herd.reporting.build.build, which `herd report` runs before rendering);

new only (the old ones take minutes each): `model_costs`, `perfics_inputs` for one job, the report and
the total with that job unsealed (computed live, as while a job runs), and the time to seal it; and the
time the fill took to store every share and seal every job (what the pump ticks spread over the
night); and what one pump tick's fill costs while a job of `--running` attempts runs, and after it
is done but still in the open tail (`pump_ticks`). Jobs are `--jobs` (default one per 100,000
attempts: the same job size at 1M and 10M). The old views live in schema `sweep`
(tests/support/sweep.py); pointing search_path at it makes `build` read them. Each new query runs
twice and the faster time is printed; each old one runs once (minutes).

Before 0010 (2026-12-01, 1M attempts, load average ~10): job_costs sum 118.8 s -> 37.8 s; job_model_costs
one job 142.9 s -> 18.0 s; herd report one job 445.9 s -> 93.9 s: job_windows and perfics_inputs still
aggregated the whole ledger for one job.

With sealed jobs (migration 0010), measured 2026-11-30 on the same 2-core machine shared with two other
engineers' test runs (load average 2.4-7 during the run), 1M attempts in 10 jobs of 100k, old sweep
views vs now, same run, same rows: load 48.3 s, fill (store 999,999 shares, seal 10 jobs) 56.1 s;
`SELECT sum(cost_usd) FROM job_costs` 33.78 s -> 0.001 s; job_model_costs one job 25.36 s -> 0.003 s;
model_costs 0.000 s; perfics_inputs one job 0.738 s; herd report one job 98.37 s -> 1.225 s. The same
job unsealed (computed live, as while it runs): herd report 3.133 s, job_costs sum 0.764 s; sealing
it 0.764 s. A report now grows with its job (here 100k attempts) and the unsealed jobs, not the ledger.

10M attempts in 100 jobs of 100k, `--attempts 10000000 --skip-old`, same day and machine (load average
2.5-7 while loading, 0.5-2.5 while querying): load 572.6 s, fill (store 9,999,999 shares, seal 100
jobs) 541.8 s; job_costs sum 0.004 s; job_model_costs one job 0.001 s; model_costs 0.000 s;
perfics_inputs one job 0.482 s; herd report one job 0.923 s (goal: under 2 s); unsealed: herd report
2.478 s, job_costs sum 0.602 s; sealing one job 0.607 s.

Pump ticks (2026-11-30, idle machine, load ~1, 1M attempts, `--skip-old`, a job of 20,000 attempts
over the last 300 s, HERD_COST_SHARE_HORIZON_S's default): the check for sealable jobs collected the
jobs of every attempt in every endpoint's open tail on every tick: 0.238 s per tick, 0.210 s of it
that query. It now skips jobs with prompts still to run: 0.011 s per tick while the job runs (query
0.001 s). From the job's last prompt until it seals (at most the horizon) a tick still scans the
tail, 0.209 s. Same run: herd report one job 1.140 s sealed, 2.716 s live, perfics_inputs one job
0.665 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ledger import JOB_ATTEMPTS, load  # noqa: E402
from herd.ledger.db import migrate  # noqa: E402
from herd.ledger.shares import _SEALABLE, fill  # noqa: E402
from herd.reporting.build import build  # noqa: E402
from herd.settings import Settings  # noqa: E402
from tests.support.sweep import create_sweep_views  # noqa: E402


def timed(run: Callable[[], object], repeat: int = 2) -> float:
    """The fastest of `repeat` runs, seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def pump_ticks(conn: psycopg.Connection, attempts: int) -> None:
    """What the pump's fill costs every tick while a job runs: a job `running0` of `attempts` attempts
    finishing over the last `horizon` seconds (all in the open tail, so it cannot seal yet) with its
    newest 1,000 prompts still queued, then ticks as the pump makes them (herd_workers/tasks.py: horizon
    from the settings, 1 s budget, slices of 5,000): the first stores what is new, the next ones find
    nothing to store or seal. Then the same once every prompt of the job is done but its attempts are
    still in the tail (the minutes between a job's end and its seal)."""
    horizon = Settings().cost_share_horizon_s
    row = conn.execute("SELECT (now() - make_interval(secs => %s))::text", (horizon,)).fetchone()
    assert row is not None
    load(conn, attempts, jobs=1, rate=attempts / horizon, t0=row[0], prefix="running")
    conn.execute(
        """UPDATE prompts SET state = 'queued' WHERE id IN (
               SELECT p.id FROM prompts p JOIN jobs j ON j.id = p.job_id AND j.name = 'running0'
               ORDER BY p.id DESC LIMIT 1000)"""
    )
    conn.execute("ANALYZE")

    def tick() -> float:
        t = time.perf_counter()
        fill(conn, horizon_s=horizon, budget_s=1.0, slice_attempts=5000)
        return time.perf_counter() - t

    def sealable() -> float:
        t = time.perf_counter()
        conn.execute(_SEALABLE, {"job": None}).fetchall()
        return time.perf_counter() - t

    label = f"pump tick, {attempts:,} attempts in the tail"
    print(f"{label + ', first':45} {'':>12} {tick():12.3f}s", flush=True)
    for when in ("job running", "job done, not sealed"):
        if when != "job running":
            conn.execute("UPDATE prompts SET state = 'done' WHERE state = 'queued'")
        ticks = sorted(tick() for _ in range(5))
        print(f"{f'pump tick, {when} (median of 5)':45} {'':>12} {ticks[2]:12.3f}s", flush=True)
        print(f"{'  of which the sealable-jobs query':45} {'':>12} {sealable():12.3f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the loaded database")
    parser.add_argument("--jobs", type=int, help="default: one per 100,000 attempts")
    parser.add_argument("--skip-old", action="store_true", help="only the new views (e.g. at 10M)")
    parser.add_argument(
        "--running", type=int, default=20_000, help="attempts of the running job for the pump-tick figures"
    )
    args = parser.parse_args()
    jobs = args.jobs or max(1, args.attempts // JOB_ATTEMPTS)
    job = f"bench{jobs // 2}"  # a job in the middle of the ledger
    server = os.environ["HERD_DATABASE_URL"]
    # Named after the server database, so checkouts sharing one Postgres do not drop each other's.
    name = f"{urlsplit(server).path.lstrip('/') or 'herd'}_ledger_bench"
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    with psycopg.connect(server, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not args.keep:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        if not exists or not args.keep:
            admin.execute(f"CREATE DATABASE {name}")
    migrate(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            count = conn.execute("SELECT count(*) FROM attempts").fetchone()
            if not count or count[0] == 0:
                t = time.perf_counter()
                load(conn, args.attempts, jobs=jobs, progress=lambda line: print(line, flush=True))
                conn.execute("VACUUM ANALYZE")
                print(f"load {args.attempts:,} attempts: {time.perf_counter() - t:.1f} s", flush=True)
                t = time.perf_counter()
                stored = sealed = 0
                while True:  # as the pump ticks would, one bounded call after another
                    done = fill(conn, horizon_s=0, slice_attempts=50_000, budget_s=30)
                    stored, sealed = stored + done.stored, sealed + done.sealed
                    if done.stored == 0 and done.sealed == 0:
                        break
                conn.execute("VACUUM ANALYZE")
                print(
                    f"fill (store {stored:,} shares, seal {sealed} jobs): {time.perf_counter() - t:.1f} s",
                    flush=True,
                )
            create_sweep_views(conn)

            def one(sql: str) -> Callable[[], object]:
                return lambda: conn.execute(sql, {"job": job}).fetchall()

            # (label, run, also run the old view): the old sweep takes minutes per query on a loaded
            # machine, so only the queries issue 12 names run both ways.
            queries: list[tuple[str, Callable[[], object], bool]] = [
                ("SELECT sum(cost_usd) FROM job_costs", one("SELECT sum(cost_usd) FROM job_costs"), True),
                (
                    f"job_model_costs WHERE job = '{job}'",
                    one("SELECT * FROM job_model_costs WHERE job = %(job)s"),
                    True,
                ),
                ("SELECT * FROM model_costs", one("SELECT * FROM model_costs"), False),
                (
                    f"perfics_inputs WHERE job = '{job}'",
                    one("SELECT * FROM perfics_inputs WHERE job = %(job)s"),
                    False,
                ),
                (f"herd report {job} (build)", lambda: build(conn, job), True),
            ]
            print(f"{'query':45} {'old (sweep)':>12} {'new (stored)':>13}", flush=True)
            for label, run, both in queries:
                old = float("nan")
                if both and not args.skip_old:
                    conn.execute("SET search_path = sweep, public")
                    old = timed(run, repeat=1)
                conn.execute("SET search_path = public")
                new = timed(run)
                shown = "-" if old != old else f"{old:.2f}s"  # NaN: not run
                print(f"{label:45} {shown:>12} {new:12.3f}s", flush=True)
            # The same job unsealed, as while it runs (its rows computed live, one job's attempts).
            conn.execute(
                "DELETE FROM cost_rollup_jobs WHERE job_id = (SELECT id FROM jobs WHERE name = %s)", (job,)
            )
            new = timed(lambda: build(conn, job))
            print(f"{f'herd report {job}, job unsealed (live)':45} {'':>12} {new:12.3f}s", flush=True)
            new = timed(one("SELECT sum(cost_usd) FROM job_costs"))
            print(f"{'sum(cost_usd) FROM job_costs, one unsealed':45} {'':>12} {new:12.3f}s", flush=True)
            t = time.perf_counter()
            conn.execute("SELECT cost_rollup_seal(id) FROM jobs WHERE name = %s", (job,))
            print(f"{'seal one job (cost_rollup_seal)':45} {'':>12} {time.perf_counter() - t:12.3f}s")
            pump_ticks(conn, args.running)
    finally:
        if not args.keep:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()

"""Cost views over a large ledger: the full sweep (pre-0009 views) against stored shares and sealed jobs.

    python -m benchmarks.ledger_bench [--attempts 1000000] [--jobs N] [--running 20000] [--keep] [--skip-old]
                                      [--report-running 1000000] [--only-running] [--chase]

Prints figures only; docs/sql.md has the latest. Uses the Postgres server of HERD_DATABASE_URL when set,
else an embedded one under a temporary HERD_HOME, but its own database `<name>_ledger_bench`, created,
migrated, loaded by benchmarks/_lib/synthetic_ledger.py, and dropped at the end unless --keep. Prints,
for each query, the old views' time beside the new ones', measured in the same run on the same rows:

1. `SELECT sum(cost_usd) FROM job_costs` (every job: the whole ledger);
2. `SELECT * FROM job_model_costs WHERE job = ...` (one job);
3. `herd report` for one job (herd.reporting.build.build, which `herd report` runs before rendering);

new only (the old ones take minutes each): `model_costs`, `perfics_inputs` for one job, the report and
the total with that job unsealed (computed live, as while a job runs), and the time to seal it; and the
time the fill took to store every share and seal every job (what the pump ticks spread over the
night); and what one pump tick's fill costs while a job of `--running` attempts runs, and after it
is done but still in the open tail.

The morning after (a second table, each figure beside a `count(*)` of the same job's attempts timed in
the same run, the least any report of the job could cost): the last job of the ledger is left
finished but unfilled and unsealed (the fill stops before its first attempt), as the night leaves it
when nothing seals; `herd report` on it before the seal (every view live), the time to seal it as
`herd report` does first (herd.housekeeping.work.seal_job: fill its endpoints' time, seal), the report
after (and the seal beside a plain GROUP BY over the job's attempts); and the report of a running job of
`--report-running` attempts (finishing 100 a second up to now, its newest 1,000 prompts queued, its
endpoints' time closed up to the share horizon as the housekeeper's ticks leave it: only the last
`HERD_COST_SHARE_HORIZON_S` seconds are live), beside the time those fills took: up to the horizon as
it was when they started, a fixed amount of work like the ledger's fill (`--chase` also times the
loop this figure used to be, which ran until the horizon passed the job's last attempt: wall clock).
`--only-running`: after loading and filling the ledger, only that last table's running-job figures.

Jobs are `--jobs` (default one per 100,000 attempts: the same job
size at 1M and 10M). The old views live in schema `sweep` (tests/support/sweep.py); pointing
search_path at it makes `build` read them. Each new query runs twice and the faster time is printed;
each old one runs once (minutes).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import LiteralString
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from benchmarks._lib.entry import run, work_dir
from benchmarks._lib.synthetic_ledger import default_jobs, load
from benchmarks._lib.timing import timed
from herd.housekeeping.work import seal_job
from herd.ledger.db import migrate
from herd.ledger.shares import _SEALABLE, fill
from herd.reporting.build import build
from herd.settings import Settings
from tests.support.harness import services
from tests.support.sweep import create_sweep_views


@dataclass(frozen=True)
class Loaded:
    attempts: int
    load_s: float
    stored: int  # cost shares stored by the fill
    sealed: int  # jobs sealed by the fill
    fill_s: float


@dataclass(frozen=True)
class QueryTime:
    label: str
    new_s: float  # best of two runs on today's views
    old_s: float | None = None  # one run on the pre-0009 sweep views; None: not run


@contextmanager
def bench_database(server: str, *, keep: bool) -> Iterator[str]:
    """A database of its own on `server`'s Postgres, named after the server's database (so checkouts
    sharing one Postgres do not drop each other's), migrated; reused and kept with `keep`."""
    name = f"{urlsplit(server).path.lstrip('/') or 'herd'}_ledger_bench"
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    ident = sql.Identifier(name)
    with psycopg.connect(server, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not keep:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
        if not exists or not keep:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    migrate(url)
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def load_and_fill(
    conn: psycopg.Connection, attempts: int, jobs: int, progress: Callable[[str], None]
) -> Loaded:
    """The synthetic ledger, then every share stored and every job sealed, as the pump's ticks would,
    one bounded fill after another."""
    t = time.perf_counter()
    load(conn, attempts, jobs=jobs, progress=progress)
    conn.execute("VACUUM ANALYZE")
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    stored = sealed = 0
    # Up to the last job's first attempt: that job stays open, unfilled and unsealed (seal_figures).
    # A fill's horizon is relative to now(), so it is taken again before each fill.
    last_start = """SELECT extract(epoch FROM now() - min(a.finished_at)) + 1 FROM attempts a
                    JOIN prompts p ON p.id = a.prompt_id WHERE p.job_id = (SELECT max(id) FROM jobs)"""
    while True:
        row = conn.execute(last_start).fetchone()
        horizon_s = float(row[0]) if row and row[0] is not None else 0.0
        done = fill(conn, horizon_s=horizon_s, slice_attempts=50_000, budget_s=30)
        stored, sealed = stored + done.stored, sealed + done.sealed
        if done.stored == 0 and done.sealed == 0:
            break
    conn.execute("VACUUM ANALYZE")
    return Loaded(attempts, load_s, stored, sealed, time.perf_counter() - t)


def query_times(conn: psycopg.Connection, job: str, *, skip_old: bool) -> Iterator[QueryTime]:
    """Each query on today's views, and on the pre-0009 sweep views where both are timed."""

    def one(query: LiteralString) -> Callable[[], object]:
        return lambda: conn.execute(query, {"job": job}).fetchall()

    create_sweep_views(conn)
    # (label, run, also on the old views): the old sweep takes minutes per query on a loaded machine,
    # so only the queries of the first measurement run both ways.
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
    for label, query, both in queries:
        old = None
        if both and not skip_old:
            conn.execute("SET search_path = sweep, public")
            old = timed(query).best
        conn.execute("SET search_path = public")
        yield QueryTime(label, timed(query, 2).best, old)


def unsealed_times(conn: psycopg.Connection, job: str) -> Iterator[QueryTime]:
    """`job` unsealed (its rows computed live, as while it runs), then the time to seal it again."""

    def total() -> object:
        return conn.execute("SELECT sum(cost_usd) FROM job_costs").fetchall()

    def seal() -> object:
        return conn.execute("SELECT cost_rollup_seal(id) FROM jobs WHERE name = %s", (job,)).fetchall()

    conn.execute("DELETE FROM cost_rollup_jobs WHERE job_id = (SELECT id FROM jobs WHERE name = %s)", (job,))
    yield QueryTime(f"herd report {job}, job unsealed (live)", timed(lambda: build(conn, job), 2).best)
    yield QueryTime("sum(cost_usd) FROM job_costs, one unsealed", timed(total, 2).best)
    yield QueryTime("seal one job (cost_rollup_seal)", timed(seal).best)


def pump_ticks(conn: psycopg.Connection, attempts: int) -> Iterator[QueryTime]:
    """What the pump's fill costs every tick while a job runs: a job `running0` of `attempts` attempts
    finishing over the last `horizon` seconds (all in the open tail, so it cannot seal yet) with its
    newest 1,000 prompts still queued, then ticks as the pump makes them (herd_workers/tasks.py: horizon
    from the settings, 1 s budget, slices of 5,000): the first stores what is new, the next ones find
    nothing to store or seal. Then the same once every prompt of the job is done but its attempts are
    still in the tail (the minutes between a job's end and its seal). Medians of 5 ticks."""
    horizon = Settings().cost_share_horizon_s
    row = conn.execute("SELECT (now() - make_interval(secs => %s))::text", (horizon,)).fetchone()
    assert row is not None  # a SELECT without FROM returns its row
    load(conn, attempts, jobs=1, rate=attempts / horizon, t0=row[0], prefix="running")
    conn.execute(
        """UPDATE prompts SET state = 'queued' WHERE id IN (
               SELECT p.id FROM prompts p JOIN jobs j ON j.id = p.job_id AND j.name = 'running0'
               ORDER BY p.id DESC LIMIT 1000)"""
    )
    conn.execute("ANALYZE")

    def tick() -> object:
        return fill(conn, horizon_s=horizon, budget_s=1.0, slice_attempts=5000)

    def sealable() -> object:
        return conn.execute(_SEALABLE, {"job": None}).fetchall()

    yield QueryTime(f"pump tick, {attempts:,} attempts in the tail, first", timed(tick).best)
    for when in ("job running", "job done, not sealed"):
        if when != "job running":
            conn.execute("UPDATE prompts SET state = 'done' WHERE state = 'queued'")
        yield QueryTime(f"pump tick, {when} (median of 5)", timed(tick, 5).median)
        yield QueryTime("  of which the sealable-jobs query", timed(sealable).best)


@dataclass(frozen=True)
class BesideCount:
    label: str
    seconds: float
    count_s: float  # SELECT count(*) of the same job's attempts, best of two, same run


def job_attempts(conn: psycopg.Connection, job: str) -> Callable[[], object]:
    """The baseline: count the job's attempts (through its prompts, as every report query must)."""
    return lambda: conn.execute(
        "SELECT count(*) FROM attempts a JOIN prompts p ON p.id = a.prompt_id "
        "JOIN jobs j ON j.id = p.job_id WHERE j.name = %s",
        (job,),
    ).fetchall()


def job_group_by(conn: psycopg.Connection, job: str) -> Callable[[], object]:
    """The seal's baseline: a plain GROUP BY over the job's attempts (per model: count, tokens, busy)."""
    return lambda: conn.execute(
        "SELECT a.model, count(*), sum(a.prompt_tokens), sum(a.busy_s) FROM attempts a "
        "JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id WHERE j.name = %s "
        "GROUP BY a.model",
        (job,),
    ).fetchall()


def seal_figures(conn: psycopg.Connection) -> list[BesideCount]:
    """The morning after (see the module docstring): the last job before and after its seal and the
    time to seal it. Before any fill of the pump-tick figures (one would seal it). The report before
    the seal runs once (it is the slow one)."""
    row = conn.execute(
        "SELECT name, id, EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = j.id) FROM jobs j "
        "WHERE name LIKE 'bench%%' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    last, last_id, sealed = str(row[0]), int(row[1]), bool(row[2])
    count = timed(job_attempts(conn, last), 2).best
    out = []
    if sealed:  # a kept database whose last job a previous run sealed
        print(f"({last} is sealed already: run without --keep for the figures before the seal)")
    else:
        before = timed(lambda: build(conn, last)).best
        out.append(BesideCount(f"herd report {last}, finished, unsealed (live)", before, count))
        seal = timed(lambda: seal_job(conn, last_id, Settings())).best
        out.append(BesideCount(f"seal {last} (what herd report does first)", seal, count))
        group = timed(job_group_by(conn, last), 2).best
        out.append(BesideCount("  beside: a plain GROUP BY model over its attempts", group, count))
    after = timed(lambda: build(conn, last), 2).best
    return [*out, BesideCount(f"herd report {last}, sealed", after, count)]


def fills_until(conn: psycopg.Connection, until: str) -> tuple[int, int]:
    """Fill, in 50,000-attempt slices and 30 s calls, every endpoint's time up to the fixed instant
    `until` (a timestamptz literal) until a call stores nothing. Each call's horizon is taken again
    from the database clock so that it points at `until`: a horizon in seconds behind now() is a cut
    that moves with the clock. Returns (shares stored, calls)."""
    stored = calls = 0
    while True:
        row = conn.execute("SELECT extract(epoch FROM now() - %s::timestamptz)::float8", (until,)).fetchone()
        assert row is not None
        calls += 1
        done = fill(conn, horizon_s=float(row[0]), slice_attempts=50_000, budget_s=30)
        stored += done.stored
        if not done.stored:
            return stored, calls


def running_report(conn: psycopg.Connection, running: int, *, chase: bool = False) -> list[BesideCount]:
    """The report of a job of `running` attempts still running (see the module docstring): finishing
    at the synthetic ledger's rate (100 a second) up to now, its newest 1,000 prompts queued, and its
    endpoints' time closed up to the share horizon, as the housekeeper's ticks leave it (the last
    `cost_share_horizon_s` seconds, 30,000 attempts at the default, are the open tail). Also the
    time those ticks' fills took in all (what the housekeeper spreads over the job's hours): up to a
    fixed instant, the share horizon before the first fill, so the figure is the work of filling the
    job (like the ledger's fill), not the wall clock; then one more call up to the horizon as it is
    by then, as the next tick would.

    `chase`: also time the loop this figure used to be, `fill(horizon_s=...)` again and again until
    a call stores nothing. Each call's cut is `now() - horizon`, so it stores the attempts that aged
    past the horizon during the previous call; while a call lasts longer than the gap between two
    attempts (10 ms at 100 a second) nearly every call stores some, and the loop ends only when the
    horizon passes the job's last attempt: about `cost_share_horizon_s` after the job was loaded,
    whatever the fill costs."""
    rate, horizon = 100.0, Settings().cost_share_horizon_s
    stamp = conn.execute("SELECT (now() - make_interval(secs => %s))::text", (running / rate,)).fetchone()
    assert stamp is not None
    load(conn, running, jobs=1, rate=rate, t0=stamp[0], prefix="report-running")
    conn.execute(
        """UPDATE prompts SET state = 'queued' WHERE id IN (
               SELECT p.id FROM prompts p JOIN jobs j ON j.id = p.job_id AND j.name = 'report-running0'
               ORDER BY p.id DESC LIMIT 1000)"""
    )
    conn.execute("ANALYZE")
    count = timed(job_attempts(conn, "report-running0"), 2).best
    until = conn.execute("SELECT (now() - make_interval(secs => %s))::text", (horizon,)).fetchone()
    assert until is not None
    t = time.perf_counter()
    stored, calls = fills_until(conn, str(until[0]))
    fills = time.perf_counter() - t
    out = [
        BesideCount(
            f"fills of a running job ({running:,} attempts; {stored:,} shares, {calls} calls)", fills, count
        )
    ]
    t = time.perf_counter()
    last = fill(conn, horizon_s=horizon, slice_attempts=50_000, budget_s=30)
    out.append(
        BesideCount(
            f"  then one call up to the horizon now ({last.stored:,} shares)", time.perf_counter() - t, count
        )
    )
    if chase:
        t, stored, calls = time.perf_counter(), 0, 0
        while True:
            calls += 1
            done = fill(conn, horizon_s=horizon, slice_attempts=50_000, budget_s=30)
            stored += done.stored
            if not done.stored:
                break
        label = f"  then the old loop: now() - horizon each call ({stored:,} shares, {calls} calls)"
        out.append(BesideCount(label, time.perf_counter() - t, count))
    conn.execute("VACUUM ANALYZE")
    report = timed(lambda: build(conn, "report-running0"), 2).best
    return [*out, BesideCount(f"herd report, running job ({running:,} attempts)", report, count)]


def row(q: QueryTime, *, not_run: str = "") -> str:
    """A line of the table; `not_run` stands where the old views were not timed."""
    old = not_run if q.old_s is None else f"{q.old_s:.2f}s"
    return f"{q.label:45} {old:>12} {q.new_s:12.3f}s"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--attempts", type=int, default=1_000_000)
    p.add_argument("--keep", action="store_true", help="keep (and reuse) the loaded database")
    p.add_argument("--jobs", type=int, help="default: one per 100,000 attempts")
    p.add_argument("--skip-old", action="store_true", help="only the new views (e.g. at 10M)")
    p.add_argument(
        "--running", type=int, default=20_000, help="attempts of the running job for the pump-tick figures"
    )
    p.add_argument(
        "--report-running",
        type=int,
        default=1_000_000,
        help="attempts of the running job whose report is timed",
    )
    p.add_argument(
        "--only-running",
        action="store_true",
        help="after loading and filling the ledger, only the running job's fills and report",
    )
    p.add_argument(
        "--chase",
        action="store_true",
        help="also time the running job's fills as they used to be (a horizon behind now() at each call)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    jobs = args.jobs or default_jobs(args.attempts)
    job = f"bench{jobs // 2}"  # a job in the middle of the ledger

    def say(line: str) -> None:
        print(line, flush=True)

    with work_dir("herd-ledger-bench-") as work, services(work / "home") as svc:
        with (
            bench_database(svc.database_url, keep=args.keep) as url,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            count = conn.execute("SELECT count(*) FROM attempts").fetchone()
            if not count or count[0] == 0:
                loaded = load_and_fill(conn, args.attempts, jobs, say)
                say(f"load {loaded.attempts:,} attempts: {loaded.load_s:.1f} s")
                say(
                    f"fill (store {loaded.stored:,} shares, seal {loaded.sealed} jobs): {loaded.fill_s:.1f} s"
                )
            morning: list[BesideCount] = []
            if not args.only_running:
                say(f"{'query':45} {'old (sweep)':>12} {'new (stored)':>13}")
                for q in query_times(conn, job, skip_old=args.skip_old):
                    say(row(q, not_run="-"))
                morning = seal_figures(conn)
                for q in itertools.chain(unsealed_times(conn, job), pump_ticks(conn, args.running)):
                    say(row(q))
            say(f"{'the morning after':52} {'time':>10} {'count(*)':>10}")
            for b in [*morning, *running_report(conn, args.report_running, chase=args.chase)]:
                say(f"{b.label:52} {b.seconds:9.2f}s {b.count_s:9.2f}s")
    return 0


if __name__ == "__main__":
    run(main)

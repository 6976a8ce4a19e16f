"""benchmarks/ledger_bench.py's fills of a running job do a fixed amount of work.

The figure used to be a loop of `fill(horizon_s=...)` until a call stored nothing; each call's cut is
`now() - horizon`, so the loop stored what aged past the horizon during the previous call and ran
until the horizon passed the job's last attempt: wall clock, not work. `fills_until` closes the
endpoints' time up to one fixed instant: on a real Postgres with a synthetic running job, it stores
the share of every attempt ending by that instant (the ledger's fill does the same work for its
attempts), none ending later than a second after it, and stops at the first call that finds nothing.
"""

from __future__ import annotations

import psycopg

from benchmarks._lib.synthetic_ledger import load
from benchmarks.ledger_bench import fills_until


def test_fills_until_stores_up_to_the_instant_and_stops(db: psycopg.Connection) -> None:
    # 3,000 attempts finishing 100 a second over the last 30 s, as running_report loads its job.
    row = db.execute("SELECT (now() - interval '30 s')::text, (now() - interval '10 s')::text").fetchone()
    assert row is not None
    t0, until = str(row[0]), str(row[1])
    load(db, 3000, jobs=1, rate=100.0, t0=t0, prefix="running")
    db.execute("ANALYZE")

    stored, calls = fills_until(db, until)

    def attempts(where: str) -> int:
        got = db.execute(f"SELECT count(*) FROM attempts WHERE {where}", (until,)).fetchone()
        return int(got[0]) if got else -1

    by_until = attempts("finished_at <= %s::timestamptz")
    # Each call's horizon is the instant plus the few milliseconds between reading the clock and the
    # fill's transaction start: never a second.
    by_after = attempts("finished_at <= %s::timestamptz + interval '1 s'")
    shares = db.execute("SELECT count(*) FROM cost_shares").fetchone()
    assert shares is not None
    assert by_until <= stored == shares[0] <= by_after
    # The instant lies inside the job: part of it stays open.
    assert 0 < by_until < attempts("%s::timestamptz IS NOT NULL")
    # One call stores the slices, the next finds nothing (a third only if the clock moved the cut
    # past an attempt in between).
    assert calls <= 3
    # The endpoints' time is closed up to busy ends at or before the last horizon, not beyond.
    late = db.execute(
        "SELECT count(*) FROM cost_share_marks WHERE closed_until > %s::timestamptz + interval '1 s'",
        (until,),
    ).fetchone()
    assert late is not None and late[0] == 0

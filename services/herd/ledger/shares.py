"""Fill the stored cost shares (migration 0009): sweep each endpoint's newly closed time once.

An endpoint's time before `closed_until` is closed: every attempt busy there is in the ledger, and
its share of the busy seconds (docs/cost-model.md) is final. `fill` moves `closed_until` forward to
the last busy end at least `horizon_s` seconds old, sweeps the slice in between with the same
arithmetic as the views, and stores the result; `attempt_costs` then sweeps only what is left.

Then it seals every job whose shares are all final (migration 0010): the job's `job_model_costs`
and `job_windows` rows are stored, so the views read them instead of the job's attempts, until a
change to the job (or a rewind over its endpoints) unseals it.

Who calls it: every worker's pump tick (already periodic, already holding a database connection, and
a writer; `herd report` runs in a read-only snapshot and psql users may be `herd_reader`). Reports
stay correct without any fill: the open tail is swept at query time, just slower.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

# pg_try_advisory_xact_lock key: one filler at a time across all worker processes ("herdfill").
_LOCK_KEY = 0x68657264_66696C6C
# pg_advisory_xact_lock(class, job id mod 2^31 - 1): a job's seal lock (migration 0010's trigger).
_SEAL_CLASS = 0x68657264  # "herd"

_VALID = "a.busy_s > 0 AND a.busy_s < 'Infinity'"

# Late arrivals, per endpoint: rewind to a cut at or before the earliest late busy start minus the
# longest busy interval there, so every elementary segment the arrival changed is swept again.
_TAKE_LATE = """
WITH late AS (DELETE FROM cost_share_late RETURNING endpoint, busy_start, busy_s)
SELECT l.endpoint,
       min(l.busy_start) - make_interval(secs => greatest(max(l.busy_s), m.max_busy_s)) AS target
FROM late l
JOIN cost_share_marks m ON m.endpoint = l.endpoint
GROUP BY l.endpoint, m.max_busy_s
"""

# One slice [cut, new_cut) of one endpoint: the views' sweep restricted to the slice, with each
# attempt's interval clipped to it. Both ends are busy ends of the ledger (or -infinity), so no
# elementary segment straddles them and each `length / n` is the very quotient the full sweep takes.
_SLICE = f"""
WITH involved AS (
    SELECT a.id AS attempt_id,
           a.busy_s,
           a.finished_at AS busy_end,
           greatest(a.finished_at - make_interval(secs => a.busy_s), %(cut)s::timestamptz) AS lo,
           least(a.finished_at, %(new_cut)s::timestamptz) AS hi
    FROM attempts a
    WHERE a.endpoint = %(endpoint)s
      AND a.finished_at > %(cut)s::timestamptz
      -- Anything that starts before new_cut ends within max_busy_s of it.
      AND a.finished_at <= %(new_cut)s::timestamptz + make_interval(secs => %(max_busy_s)s)
      AND {_VALID}
      AND a.finished_at - make_interval(secs => a.busy_s) < %(new_cut)s::timestamptz
),
events AS (
    SELECT lo AS t, 1 AS delta FROM involved
    UNION ALL
    SELECT hi AS t, -1 AS delta FROM involved
),
instants AS (
    SELECT t, sum(delta) AS delta FROM events GROUP BY t
),
segments AS (
    SELECT t, sum(delta) OVER w AS in_flight, extract(epoch FROM lead(t) OVER w - t) AS length_s
    FROM instants
    WINDOW w AS (ORDER BY t)
),
cumulative AS (
    SELECT t,
           coalesce(sum(length_s / nullif(in_flight, 0)) OVER (
               ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS c
    FROM segments
),
parts AS (
    SELECT i.attempt_id, i.busy_end <= %(new_cut)s::timestamptz AS final, c_end.c - c_start.c AS part_s
    FROM involved i
    JOIN cumulative c_start ON c_start.t = i.lo
    JOIN cumulative c_end ON c_end.t = i.hi
),
carried AS (
    INSERT INTO cost_share_carry (attempt_id, cut, part_s)
    SELECT attempt_id, %(cut)s::timestamptz, part_s FROM parts WHERE NOT final
    ON CONFLICT (attempt_id, cut) DO UPDATE SET part_s = excluded.part_s
    RETURNING 1
),
finals AS (
    SELECT p.attempt_id,
           p.part_s
           + coalesce((SELECT sum(k.part_s) FROM cost_share_carry k WHERE k.attempt_id = p.attempt_id), 0)
           AS shared_s
    FROM parts p
    WHERE p.final
),
-- Each share with its attempt's job, model, GPU seconds and cost (migration 0017's columns, 0003's
-- per-attempt expressions), computed here in the one join rather than by a trigger per row; the
-- statement triggers on cost_shares add them to cost_share_totals, one aggregate per slice.
stored AS (
    INSERT INTO cost_shares (attempt_id, shared_s, job_id, model, gpu_s, cost_usd)
    SELECT f.attempt_id, f.shared_s, pr.job_id, a.model, f.shared_s * a.gpu_count,
           f.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600
    FROM finals f
    JOIN attempts a ON a.id = f.attempt_id
    JOIN prompts pr ON pr.id = a.prompt_id
    ON CONFLICT (attempt_id) DO UPDATE
    SET shared_s = excluded.shared_s, job_id = excluded.job_id, model = excluded.model,
        gpu_s = excluded.gpu_s, cost_usd = excluded.cost_usd
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored), (SELECT count(*) FROM carried),
       (SELECT coalesce(max(busy_s), 0) FROM involved)
"""


# Jobs to seal (migration 0010): not sealed, with attempts, none of them in any endpoint's open tail,
# so every share of the job is final. All jobs (job NULL) or one. A job with prompts still to run is
# not a candidate (three probes of ix_prompts_job_id_state; its next attempt would unseal it anyway):
# without that, every pump tick of a running job collected the jobs of every attempt in every open
# tail (0.21 s with 20,000 attempts in it; benchmarks/ledger_bench.py). The tail is still scanned
# once per tick from a job's last prompt until it is sealed (at most the share horizon).
_SEALABLE = f"""
WITH candidates AS (
    SELECT j.id
    FROM (
        SELECT j.id
        FROM jobs j
        WHERE (%(job)s::bigint IS NULL OR j.id = %(job)s)
          AND NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = j.id)
          AND NOT EXISTS (SELECT FROM prompts o
                          WHERE o.job_id = j.id AND o.state IN ('pending', 'queued', 'held'))
        OFFSET 0
    ) j
    -- Then one attempt of each such job, found through its prompts' index. As a plain EXISTS the
    -- planner joined every prompt of the ledger to every attempt (4.9 s a tick at 10M attempts);
    -- OFFSET 0 above keeps the cheap tests first.
    CROSS JOIN LATERAL (
        SELECT FROM prompts p JOIN attempts a ON a.prompt_id = p.id WHERE p.job_id = j.id LIMIT 1
    ) answered
),
tail_jobs AS (
    SELECT DISTINCT a.job_id
    FROM cost_share_marks m
    -- Each endpoint's open tail by its (endpoint, finished_at) index and each attempt's job by its
    -- prompt's key; OFFSET 0 keeps the planner from flattening this into a scan of every attempt.
    CROSS JOIN LATERAL (
        SELECT (SELECT p.job_id FROM prompts p WHERE p.id = a.prompt_id) AS job_id
        FROM attempts a
        WHERE a.endpoint = m.endpoint AND a.finished_at > m.closed_until AND {_VALID}
        OFFSET 0
    ) a
    WHERE EXISTS (SELECT FROM candidates)
)
SELECT c.id FROM candidates c
WHERE NOT EXISTS (SELECT FROM tail_jobs t WHERE t.job_id = c.id)
ORDER BY c.id
"""


@dataclass(frozen=True)
class FillResult:
    """What one fill did: attempts whose share became final, parts carried, endpoints rewound, jobs
    sealed (their job_model_costs rows stored in cost_rollups, migration 0010)."""

    stored: int = 0
    carried: int = 0
    rewound: int = 0
    busy: bool = False  # another process was filling; nothing done
    sealed: int = 0
    sealed_shares: int = 0  # stored shares of the jobs sealed (cost_share_totals, migration 0017)


def fill(
    conn: psycopg.Connection,
    *,
    horizon_s: float,
    slice_attempts: int = 50_000,
    budget_s: float = 5.0,
    job: int | None = None,
    max_attempts: int | None = None,
) -> FillResult:
    """Close each endpoint's time up to `horizon_s` seconds (database clock) before now.

    `slice_attempts` bounds one slice's sweep; `budget_s` (seconds) bounds one call, so a pump tick
    catching up on a large ledger returns and the next tick goes on. `max_attempts` bounds the work
    of one call whatever the machine's speed: the call stores at most that many shares (more only
    where attempts end at the very instant of its last cut), and seals jobs only while the shares it
    stored plus those of the jobs it sealed stay below it (the first such seal runs whatever the
    job's size: a seal is one statement), so a call's work is at most `max_attempts` plus one job's
    attempts; None: no bound but `budget_s`. `conn` is an autocommit
    connection; the whole call is one transaction, holding an EXCLUSIVE lock on cost_share_marks that
    makes concurrent attempt inserts wait for it (keep slices small). Then, in a transaction per job,
    seals every job whose shares are all final (`cost_rollup_seal`, migration 0010: one GROUP BY over
    the job's attempts) until the budget is spent; only job id `job` when given. Returns counts
    (FillResult); raises psycopg errors as they come."""
    deadline = time.monotonic() + budget_s
    stored = carried = rewound = 0
    left = max_attempts if max_attempts is not None else -1  # shares still allowed; -1: no bound
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            return FillResult(busy=True)
        conn.execute("LOCK TABLE cost_share_marks IN EXCLUSIVE MODE")
        for endpoint, target in conn.execute(_TAKE_LATE).fetchall():
            rewound += _rewind(conn, endpoint, target)
        marks = conn.execute(
            # closed_until as text: '-infinity' has no Python datetime.
            "SELECT endpoint, closed_until::text, max_busy_s, now() - make_interval(secs => %s) "
            "FROM cost_share_marks ORDER BY endpoint",
            (horizon_s,),
        ).fetchall()
        for endpoint, cut, max_busy_s, horizon in marks:
            # The longest interval still to sweep bounds how far past a cut an involved attempt ends.
            row = conn.execute(
                f"SELECT coalesce(max(a.busy_s), 0) FROM attempts a "
                f"WHERE a.endpoint = %s AND a.finished_at > %s::timestamptz AND {_VALID}",
                (endpoint, cut),
            ).fetchone()
            longest = max(float(row[0]) if row else 0.0, max_busy_s)
            while time.monotonic() < deadline and left != 0:
                limit = slice_attempts if left < 0 else min(slice_attempts, left)
                new_cut = _next_cut(conn, endpoint, cut, horizon, limit)
                if new_cut is None:
                    break
                params: dict[str, object] = {
                    "endpoint": endpoint,
                    "cut": cut,
                    "new_cut": new_cut,
                    "max_busy_s": longest,
                }
                done = conn.execute(_SLICE, params).fetchone()
                assert done is not None
                stored += int(done[0])
                carried += int(done[1])
                left = -1 if left < 0 else max(0, left - int(done[0]))
                conn.execute(
                    "UPDATE cost_share_marks SET closed_until = %s, max_busy_s = greatest(max_busy_s, %s) "
                    "WHERE endpoint = %s",
                    (new_cut, float(done[2]), endpoint),
                )
                conn.execute(
                    "INSERT INTO cost_share_cuts (endpoint, cut) VALUES (%s, %s)", (endpoint, new_cut)
                )
                cut = new_cut
    sealed, sealed_shares = _seal(conn, deadline, job, left)
    return FillResult(stored, carried, rewound, sealed=sealed, sealed_shares=sealed_shares)


def is_sealed(conn: psycopg.Connection, job_id: int) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT FROM cost_rollup_jobs WHERE job_id = %s)", (job_id,)).fetchone()
    return bool(row and row[0])


def _seal(
    conn: psycopg.Connection, deadline: float, job: int | None = None, left: int = -1
) -> tuple[int, int]:
    """Seal every job whose shares are all final, one transaction per job, until `deadline` or until
    the sealed jobs' stored shares reach `left` (-1: no bound; 0: seal nothing). Returns (jobs sealed,
    their stored shares).

    Not under the fill's EXCLUSIVE lock on cost_share_marks: sealing a night's job is one GROUP BY
    over all its attempts (seconds), and every attempt insert of the herd would wait for it. Instead
    each seal holds the fill's advisory lock (no rewind can run meanwhile; a rewind afterwards unseals
    what it touches) and the job's seal lock, which the attempts trigger takes shared for the jobs it
    changes: an insert into the job waits for the seal and then unseals it, or the seal waits for the
    insert and sees it when it checks the job again."""
    sealed = shares = 0
    if left == 0:
        return 0, 0
    for (job_id,) in conn.execute(_SEALABLE, {"job": job}).fetchall():
        if time.monotonic() >= deadline or (left > 0 and sealed and shares >= left):
            break
        try:
            with conn.transaction():
                got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
                if not got or not got[0]:
                    break
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, (%s::bigint %% 2147483647)::integer)",
                    (_SEAL_CLASS, job_id),
                )
                if conn.execute(_SEALABLE, {"job": job_id}).fetchone() is not None:
                    conn.execute("SELECT cost_rollup_seal(%s)", (job_id,))
                    sealed += 1
                    row = conn.execute(
                        "SELECT coalesce(sum(shares), 0) FROM cost_share_totals WHERE job_id = %s", (job_id,)
                    ).fetchone()
                    shares += int(row[0]) if row else 0
        except psycopg.errors.ForeignKeyViolation:
            continue  # the job was deleted meanwhile
    return sealed, shares


def _next_cut(
    conn: psycopg.Connection, endpoint: str, cut: datetime | str, horizon: datetime, limit: int
) -> datetime | None:
    """The busy end closing the next slice: at most `limit` attempts past `cut`, none after `horizon`."""
    row = conn.execute(
        f"""SELECT max(finished_at) FROM (
                SELECT a.finished_at FROM attempts a
                WHERE a.endpoint = %s AND a.finished_at > %s::timestamptz AND a.finished_at <= %s
                      AND {_VALID}
                ORDER BY a.finished_at
                LIMIT %s) s""",
        (endpoint, cut, horizon, limit),
    ).fetchone()
    return row[0] if row else None


def _rewind(conn: psycopg.Connection, endpoint: str, target: datetime) -> int:
    """Reopen `endpoint` back to its last cut at or before `target`; 1 if it moved, else 0."""
    row = conn.execute(
        """WITH r AS (
               SELECT coalesce((SELECT max(cut) FROM cost_share_cuts WHERE endpoint = %(e)s AND cut <= %(t)s),
                               '-infinity'::timestamptz) AS cut)
           SELECT r.cut::text FROM r JOIN cost_share_marks m ON m.endpoint = %(e)s
           WHERE r.cut < m.closed_until""",
        {"e": endpoint, "t": target},
    ).fetchone()
    if row is None:
        return 0
    back = {"e": endpoint, "r": row[0]}
    # Every job with an attempt past the cut loses its rollup: its shares are about to change.
    conn.execute(
        """DELETE FROM cost_rollup_jobs s USING attempts a JOIN prompts p ON p.id = a.prompt_id
           WHERE s.job_id = p.job_id AND a.endpoint = %(e)s AND a.finished_at > %(r)s::timestamptz""",
        back,
    )
    # Every attempt ending after the cut loses its total; parts of slices from the cut on go too.
    conn.execute(
        """DELETE FROM cost_shares s USING attempts a
           WHERE a.id = s.attempt_id AND a.endpoint = %(e)s AND a.finished_at > %(r)s::timestamptz""",
        back,
    )
    conn.execute(
        """DELETE FROM cost_share_carry k USING attempts a
           WHERE a.id = k.attempt_id AND a.endpoint = %(e)s AND a.finished_at > %(r)s::timestamptz
             AND k.cut >= %(r)s::timestamptz""",
        back,
    )
    conn.execute("DELETE FROM cost_share_cuts WHERE endpoint = %(e)s AND cut > %(r)s::timestamptz", back)
    conn.execute("UPDATE cost_share_marks SET closed_until = %(r)s::timestamptz WHERE endpoint = %(e)s", back)
    return 1

"""Running totals of final shares (migration 0017) equal what the live views compute, at every step.

On seeded random ledgers filled part way, with late arrivals (rewinds that unseal), deleted attempts,
prompts and jobs, and attempts whose price changes: after each step,
- `cost_share_totals` equals a GROUP BY over the stored shares recomputed from their attempts;
- `cost_job_models` (totals + open tail) equals 0010's aggregate over `attempt_costs` for every job,
  every column as text (the same digits, and the same scale of each numeric), and
  `cost_job_model_sums` (perfics' per-model sums) equals its columns of it.
Once every endpoint's time is closed, the public views also equal the pre-0009 sweep
(tests/unit/test_cost_shares.py). Part way they may not, already before running totals: a share
stored by a slice can differ from the whole sweep's beyond the 20th digit, and so a cost's scale
(seed 1's horizon here); the totals equal what the views read, stored shares as they are.
Then the work bound of one fill (`max_attempts`): each call stays within it, and calls repeated
until nothing is left store every share and seal every job.
"""

from __future__ import annotations

import random

import psycopg
import pytest

from herd.ledger.shares import fill
from tests.support.sweep import create_sweep_views
from tests.unit.test_cost_rollups import job_run, sealed
from tests.unit.test_cost_shares import assert_views_equal, horizon_at
from tests.unit.test_costs import add_attempt, add_job, add_prompt


@pytest.fixture
def sweep(db: psycopg.Connection) -> psycopg.Connection:
    create_sweep_views(db)
    return db


FIGURES = (
    "attempts answers critiques refinements escalations errors prompt_tokens generated_tokens "
    "attributed_gpu_hours cost_usd provisioned_gpu_hours provisioned_cost_usd latency_p50_s "
    "latency_p95_s attributed_gpu_seconds"
).split()

# 0010's cost_job_models body (before running totals): every attempt of the job through attempt_costs.
LIVE = """
SELECT ROW(c.model,
           count(*),
           count(*) FILTER (WHERE c.stage = 'answer'),
           count(*) FILTER (WHERE c.stage = 'critique'),
           count(*) FILTER (WHERE c.stage = 'refine'),
           count(*) FILTER (WHERE c.escalated),
           count(*) FILTER (WHERE c.status = 'error'),
           coalesce(sum(c.prompt_tokens), 0),
           coalesce(sum(c.generated_tokens), 0),
           sum(c.attributed_gpu_seconds) / 3600,
           sum(c.cost_usd),
           w.window_s * max(c.gpu_count) / 3600,
           w.window_s * max(c.gpu_count) * max(c.usd_per_gpu_hour) / 3600,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY c.latency_s) FILTER (WHERE c.status = 'ok'),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY c.latency_s) FILTER (WHERE c.status = 'ok'),
           sum(c.attributed_gpu_seconds))::text
FROM attempt_costs c
CROSS JOIN cost_job_window(%(job)s) w
WHERE c.job_id = %(job)s
GROUP BY c.model, w.window_s
ORDER BY c.model
"""
# Every column as text: the same numbers, and the same scale of each numeric.
NOW = "SELECT m::text FROM cost_job_models(%(job)s) m ORDER BY m.model"
# perfics' per-model sums (cost_job_model_sums) and the same columns of cost_job_models, as text.
SUMS = """SELECT ROW(m.model, m.attempts, m.refinements, m.cost_usd, m.attributed_gpu_seconds)::text
FROM cost_job_model_sums(%(job)s) m ORDER BY m.model"""
SUMS_WANT = """SELECT ROW(m.model, m.attempts, m.refinements, m.cost_usd, m.attributed_gpu_seconds)::text
FROM cost_job_models(%(job)s) m ORDER BY m.model"""
# A sealed job's stored rows (cost_rollup_seal stores cost_job_models' rows), in the same shape.
SEALED = f"""
SELECT ROW(r.model, {", ".join(f"r.{c}" for c in FIGURES)})::text
FROM cost_rollups r WHERE r.job_id = %(job)s ORDER BY r.model
"""

# The totals as they should be: the stored shares, their figures recomputed from their attempts.
TOTALS_WANT = """
SELECT p.job_id, a.model, count(*), sum(s.shared_s * a.gpu_count)::text,
       sum(s.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600)::text
FROM cost_shares s JOIN attempts a ON a.id = s.attempt_id JOIN prompts p ON p.id = a.prompt_id
GROUP BY 1, 2 ORDER BY 1, 2
"""
TOTALS_HAVE = """
SELECT job_id, model, sum(shares), round(sum(gpu_s), max(gpu_scale))::text,
       round(sum(cost_usd), max(cost_scale))::text
FROM cost_share_totals WHERE shares > 0
GROUP BY 1, 2 ORDER BY 1, 2
"""


def assert_totals_exact(db: psycopg.Connection) -> None:
    assert db.execute(TOTALS_HAVE).fetchall() == db.execute(TOTALS_WANT).fetchall()
    jobs = [r[0] for r in db.execute("SELECT id FROM jobs ORDER BY id").fetchall()]
    for job in jobs:
        live = db.execute(LIVE, {"job": job}).fetchall()
        assert db.execute(NOW, {"job": job}).fetchall() == live, job
        assert db.execute(SUMS, {"job": job}).fetchall() == db.execute(SUMS_WANT, {"job": job}).fetchall(), (
            job
        )
        if db.execute("SELECT FROM cost_rollup_jobs WHERE job_id = %s", (job,)).fetchone():
            assert db.execute(SEALED, {"job": job}).fetchall() == live, job


def late_job(db: psycopg.Connection, name: str, rng: random.Random, n: int) -> None:
    """n attempts busy in time already closed (a worker whose clock is behind, a retried write)."""
    job = add_job(db, name)
    for k in range(n):
        start = rng.randrange(0, 20_000) / 1000
        add_attempt(
            db, add_prompt(db, job, f"{name}{k}"), "small", start, start + rng.randrange(1, 5000) / 1000,
            endpoint=rng.choice(["http://e1", "http://e2"]), gpu_count=rng.choice([1, 2]),
        )  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_totals_equal_the_live_sums_through_fills_rewinds_and_deletes(
    sweep: psycopg.Connection, seed: int
) -> None:
    db = sweep
    rng = random.Random(seed)
    job_run(db, "early", 0, 25, rng)
    job_run(db, "night", 100, 25, rng)
    job_run(db, "other", 100, 15, rng)
    assert_totals_exact(db)  # nothing filled: every share in the open tail, no totals
    fill(db, horizon_s=horizon_at(db, rng.uniform(5, 115)), slice_attempts=rng.randrange(3, 9))
    assert_totals_exact(db)
    # Late arrivals into closed time: before the fill rewinds, the live views still read the stored
    # shares (the late attempts share nothing yet), and so do the totals.
    late_job(db, "late", rng, 6)
    assert db.execute("SELECT count(*) FROM cost_share_late").fetchone() != (0,)
    assert_totals_exact(db)
    done = fill(db, horizon_s=horizon_at(db, 110), slice_attempts=rng.randrange(3, 9))
    assert done.rewound > 0
    assert_totals_exact(db)
    # Deletes (an attempt, a prompt, a whole job) and an attempt's price changed: the cascade and
    # the triggers take the shares out of the totals before any fill.
    shared = [r[0] for r in db.execute("SELECT attempt_id FROM cost_shares ORDER BY 1").fetchall()]
    db.execute("DELETE FROM attempts WHERE id = %s", (shared[0],))
    db.execute("DELETE FROM prompts WHERE id = (SELECT prompt_id FROM attempts WHERE id = %s)", (shared[-1],))
    db.execute(
        "UPDATE attempts SET gpu_count = 3, usd_per_gpu_hour = 1.25 WHERE id = ANY(%s)", (shared[1:5],)
    )
    db.execute("UPDATE attempts SET escalated = NOT escalated WHERE id = ANY(%s)", (shared[-4:-1],))
    assert_totals_exact(db)
    db.execute("DELETE FROM jobs WHERE name = %s", (rng.choice(["early", "other"]),))
    assert_totals_exact(db)
    fill(db, horizon_s=0, slice_attempts=rng.randrange(3, 9))
    assert sealed(db) == {"night", "late", "early", "other"} & set(
        r[0] for r in db.execute("SELECT name FROM jobs").fetchall()
    ), "the fill to now seals every finished job"
    assert_totals_exact(db)


def test_truncating_attempts_empties_the_totals(sweep: psycopg.Connection) -> None:
    db = sweep
    job_run(db, "early", 0, 20, random.Random(5))
    fill(db, horizon_s=0)
    assert db.execute("SELECT count(*) FROM cost_share_totals").fetchone() != (0,)
    db.execute("TRUNCATE attempts CASCADE")
    assert db.execute("SELECT count(*) FROM cost_share_totals").fetchone() == (0,)
    job_run(db, "again", 0, 20, random.Random(6))
    fill(db, horizon_s=0)
    assert_totals_exact(db)


def test_each_fill_stays_within_its_work_bound_and_repeated_fills_finish(sweep: psycopg.Connection) -> None:
    db = sweep
    rng = random.Random(9)
    # Attempts end at distinct instants (job_run's whole milliseconds rarely tie; the bound's only
    # excess is attempts ending at the very instant of a cut).
    for j in range(4):
        job_run(db, f"job{j}", 30 * j, 30, rng)
    ties = db.execute(
        "SELECT count(*) - count(DISTINCT (endpoint, finished_at)) FROM attempts WHERE endpoint IS NOT NULL"
    ).fetchone()
    assert ties == (0,)
    total = db.execute(
        "SELECT count(*) FROM attempts WHERE endpoint IS NOT NULL AND busy_s > 0 AND busy_s < 'Infinity'"
    ).fetchone()
    assert total is not None and total[0] > 100
    largest = db.execute(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM attempts a JOIN prompts p ON p.id = a.prompt_id "
        "GROUP BY p.job_id) s"
    ).fetchone()
    assert largest is not None
    job_max = int(largest[0])
    bound, calls, stored = 17, 0, 0
    while len(sealed(db)) < 4:
        calls += 1
        assert calls < 100, "repeated bounded fills never finished"
        done = fill(db, horizon_s=0, slice_attempts=50, budget_s=600, max_attempts=bound)
        assert done.stored <= bound
        # Seals only with budget left, and stop once over it: at most one job past the bound.
        assert done.sealed == 0 or done.stored < bound
        assert done.stored + done.sealed_shares <= bound + job_max
        if done.sealed > 1:
            assert done.stored + done.sealed_shares - job_max < bound
        stored += done.stored
    assert stored == total[0]
    assert calls >= total[0] // bound  # the bound held on every call: many calls were needed
    assert_totals_exact(db)
    assert_views_equal(db)

"""Stored cost shares (migration 0009, herd/ledger/shares.py) equal the full sweep exactly.

Every comparison is between the public views and the pre-0009 views recreated in schema `sweep`
(tests/support/sweep.py), on the same rows: shares compared as exact numerics, not within an epsilon.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from herd.ledger.shares import fill
from tests.support.sweep import create_sweep_views
from tests.unit.test_costs import T0, add_attempt, add_final, add_job, add_prompt

COST_VIEWS = [
    "attempt_costs",
    "job_windows",
    "job_model_costs",
    "job_costs",
    "model_costs",
    "perfics_inputs",
    "policy_version_quality",
]


@pytest.fixture
def sweep(db: psycopg.Connection) -> psycopg.Connection:
    create_sweep_views(db)
    return db


def rows(db: psycopg.Connection, view: str) -> list[tuple[object, ...]]:
    return sorted(db.execute(f"SELECT * FROM {view}").fetchall(), key=repr)


def assert_views_equal(db: psycopg.Connection) -> None:
    for view in COST_VIEWS:
        new, old = rows(db, f"public.{view}"), rows(db, f"sweep.{view}")
        assert new == old, view
    shares: dict[int, Decimal] = dict(
        db.execute("SELECT attempt_id, shared_s FROM public.attempt_costs").fetchall()
    )
    assert shares, "no attempts"


def horizon_at(db: psycopg.Connection, seconds_after_t0: float) -> float:
    """The horizon (seconds before now) that closes time up to T0 + seconds_after_t0."""
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return (row[0] - (T0 + timedelta(seconds=seconds_after_t0))).total_seconds()


def random_ledger(db: psycopg.Connection, n: int, seed: int = 7) -> None:
    """n attempts of three jobs on three shared endpoints, overlapping heavily (whole milliseconds)."""
    rng = random.Random(seed)
    jobs = [add_job(db, f"job{j}") for j in range(3)]
    for i in range(n):
        job = jobs[i % 3]
        prompt = add_prompt(db, job, f"d{i}")
        start = rng.randrange(0, 60_000) / 1000
        busy = rng.choice([rng.randrange(1, 3000), rng.randrange(1, 20_000)]) / 1000
        endpoint = rng.choice(["http://e1", "http://e2", "http://e3", None])
        a = add_attempt(db, prompt, rng.choice(["small", "big"]), start, start + busy, endpoint=endpoint)
        if i % 2:
            add_final(db, prompt, a, "small")


def test_open_partly_closed_and_closed_ledgers_equal_the_sweep(sweep: psycopg.Connection) -> None:
    db = sweep
    random_ledger(db, 240)
    assert_views_equal(db)  # nothing filled: everything is the open tail
    # Close half the time in small slices: many attempts are in flight across cuts (carried parts).
    done = fill(db, horizon_s=horizon_at(db, 30), slice_attempts=7)
    assert done.stored > 0 and done.carried > 0
    assert_views_equal(db)
    done = fill(db, horizon_s=0, slice_attempts=11)
    assert_views_equal(db)
    open_tail = db.execute(
        "SELECT count(*) FROM attempts a JOIN cost_share_marks m USING (endpoint) "
        "WHERE a.finished_at > m.closed_until"
    ).fetchone()
    assert open_tail == (0,)


def test_concurrent_jobs_on_one_endpoint_share_exactly(sweep: psycopg.Connection) -> None:
    db = sweep
    one, other = add_job(db, "one"), add_job(db, "other")
    ids = [
        add_attempt(db, add_prompt(db, job, f"d{i}"), "small", i * 0.25, i * 0.25 + 1, endpoint="e")
        for i, job in enumerate([one, other] * 6)
    ]
    fill(db, horizon_s=horizon_at(db, 1.6), slice_attempts=2)
    assert_views_equal(db)
    fill(db, horizon_s=0)
    assert_views_equal(db)
    got: dict[int, Decimal] = dict(db.execute("SELECT attempt_id, shared_s FROM attempt_costs").fetchall())
    # The union of busy time, 0 to 3.75 s (thirds and quarters: exact to ~20 digits, as in the sweep).
    assert abs(sum(got[i] for i in ids) - Decimal("3.75")) < Decimal("1e-15")


def test_late_arrival_into_closed_time_is_swept_again(sweep: psycopg.Connection) -> None:
    db = sweep
    random_ledger(db, 120, seed=11)
    fill(db, horizon_s=0, slice_attempts=5)
    assert_views_equal(db)
    # A worker whose clock is behind, or a write retried after an outage: busy in closed time.
    job = add_job(db, "late")
    for k, (start, busy) in enumerate([(10.0, 4.0), (30.5, 0.25), (0.0, 59.0)]):
        add_attempt(db, add_prompt(db, job, f"late{k}"), "small", start, start + busy, endpoint="http://e2")
    assert db.execute("SELECT count(*) FROM cost_share_late").fetchone() == (3,)
    done = fill(db, horizon_s=0, slice_attempts=5)
    assert done.rewound == 1
    assert db.execute("SELECT count(*) FROM cost_share_late").fetchone() == (0,)
    assert_views_equal(db)


def test_deleting_a_job_and_moving_an_attempt_reopen_closed_time(sweep: psycopg.Connection) -> None:
    db = sweep
    random_ledger(db, 150, seed=3)
    fill(db, horizon_s=0, slice_attempts=9)
    db.execute("DELETE FROM jobs WHERE name = 'job1'")
    db.execute(
        "UPDATE attempts SET finished_at = finished_at - interval '20 seconds' "
        "WHERE id = (SELECT min(id) FROM attempts WHERE endpoint = 'http://e3')"
    )
    fill(db, horizon_s=0, slice_attempts=9)
    assert_views_equal(db)


def test_new_attempts_after_a_fill_are_in_the_open_tail(sweep: psycopg.Connection) -> None:
    db = sweep
    random_ledger(db, 60, seed=5)
    fill(db, horizon_s=0)
    job = add_job(db, "next")
    for k in range(20):
        add_attempt(
            db, add_prompt(db, job, f"n{k}"), "small", 100 + k * 0.1, 101.5 + k * 0.2, endpoint="http://e1"
        )
    assert db.execute("SELECT count(*) FROM cost_share_late").fetchone() == (0,)
    assert_views_equal(db)

"""Sealed job rollups (migration 0010) equal the full sweep exactly, and unseal on every change.

As in test_cost_shares.py, every comparison is between the public views and the pre-0009 views in
schema `sweep` (tests/support/sweep.py) on the same rows, as exact numerics: a sealed job's rows come
from cost_rollups, an unsealed job's are computed live, and both must be the sweep's digit for digit.
"""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from herd.ledger.shares import _seal, fill
from tests.support.harness import Services
from tests.support.sweep import create_sweep_views
from tests.unit.test_cost_shares import assert_views_equal, horizon_at
from tests.unit.test_costs import add_attempt, add_final, add_job, add_prompt, add_score

ENDPOINTS = ["http://e1", "http://e2", None]


@pytest.fixture
def sweep(db: psycopg.Connection) -> psycopg.Connection:
    create_sweep_views(db)
    return db


def sealed(db: psycopg.Connection) -> set[str]:
    rows = db.execute("SELECT j.name FROM cost_rollup_jobs s JOIN jobs j ON j.id = s.job_id").fetchall()
    return {r[0] for r in rows}


def job_run(db: psycopg.Connection, name: str, start: float, n: int, rng: random.Random) -> int:
    """A job of n prompts busy from `start` s for ~20 s on the shared endpoints: answers, escalations
    to `big`, critiques and refinements, errors (some before the call), scores, policy versions."""
    job = add_job(db, name)
    for i in range(n):
        prompt = add_prompt(db, job, f"{name}-{i}")
        db.execute("UPDATE prompts SET policy_version = %s WHERE id = %s", (i % 3 or None, prompt))
        t = start + rng.randrange(0, 20_000) / 1000
        busy = rng.randrange(1, 4000) / 1000
        endpoint = rng.choice(ENDPOINTS)
        status = "error" if rng.random() < 0.15 else "ok"
        first = add_attempt(
            db, prompt, "small", t, t + busy, endpoint=endpoint, status=status, escalated=i % 4 == 0
        )
        add_score(db, first, "exact", rng.choice([0.0, 1.0]))
        final, model = first, "small"
        if i % 4 == 0:
            final = add_attempt(db, prompt, "big", t + busy, t + 2 * busy, endpoint="http://e2", gpu_count=2)
            add_score(db, final, "exact", 1.0)
            model = "big"
        if i % 5 == 0:
            add_attempt(db, prompt, "small", t + busy, t + busy + 0.5, stage="critique", round_=1)
            add_attempt(db, prompt, "small", t + busy + 0.5, t + busy + 1.25, stage="refine", round_=1)
        add_final(db, prompt, final, model)
    return job


def ledger(db: psycopg.Connection, seed: int = 1) -> random.Random:
    """Three jobs: `early` (0-25 s), `night` and `other` together (100-125 s) on the same endpoints."""
    rng = random.Random(seed)
    job_run(db, "early", 0, 30, rng)
    job_run(db, "night", 100, 30, rng)
    job_run(db, "other", 100, 20, rng)
    return rng


def test_fill_part_way_seals_only_jobs_whose_shares_are_final(sweep: psycopg.Connection) -> None:
    db = sweep
    ledger(db)
    assert_views_equal(db)  # nothing sealed: every job live
    done = fill(db, horizon_s=horizon_at(db, 60), slice_attempts=7)
    assert done.sealed == 1 and sealed(db) == {"early"}
    assert_views_equal(db)
    done = fill(db, horizon_s=0, slice_attempts=13)
    assert done.sealed == 2 and sealed(db) == {"early", "night", "other"}
    assert_views_equal(db)
    # A second fill finds nothing to do.
    assert fill(db, horizon_s=0) == type(done)()


def test_a_late_arrival_unseals_its_job_and_the_jobs_it_shared_an_endpoint_with(
    sweep: psycopg.Connection,
) -> None:
    db = sweep
    ledger(db, seed=2)
    fill(db, horizon_s=0, slice_attempts=9)
    assert sealed(db) == {"early", "night", "other"}
    # `other` gets an attempt in closed time on e1, where `night` ran too (a retried write).
    other = db.execute("SELECT id FROM jobs WHERE name = 'other'").fetchone()
    assert other is not None
    add_attempt(db, add_prompt(db, other[0], "late"), "small", 104.0, 109.5, endpoint="http://e1")
    assert sealed(db) == {"early", "night"}  # at once: its counts are live again
    done = fill(db, horizon_s=0, slice_attempts=9)
    assert done.rewound == 1 and sealed(db) == {"early", "night", "other"}
    assert_views_equal(db)


def test_inserts_updates_and_deletes_unseal_and_the_live_views_equal_the_sweep(
    sweep: psycopg.Connection,
) -> None:
    db = sweep
    ledger(db, seed=3)
    fill(db, horizon_s=0)
    # A new attempt of `early` after all closed time: no late note, the views are exact at once.
    early = db.execute("SELECT id FROM jobs WHERE name = 'early'").fetchone()
    assert early is not None
    add_attempt(db, add_prompt(db, early[0], "more"), "big", 500.0, 501.5, endpoint="http://e1")
    assert "early" not in sealed(db)
    assert db.execute("SELECT count(*) FROM cost_share_late").fetchone() == (0,)
    assert_views_equal(db)
    fill(db, horizon_s=0)
    assert "early" in sealed(db)
    # An update that changes no interval (the herd marks an attempt escalated): unsealed, exact.
    db.execute(
        "UPDATE attempts SET escalated = true WHERE id = (SELECT min(a.id) FROM attempts a "
        "JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id WHERE j.name = 'night')"
    )
    assert "night" not in sealed(db)
    assert_views_equal(db)
    # A prompt deleted (its attempts cascade: the attempts trigger cannot see its job any more).
    fill(db, horizon_s=0)
    db.execute(
        "DELETE FROM prompts WHERE id = (SELECT min(p.id) FROM prompts p JOIN jobs j ON j.id = p.job_id "
        "WHERE j.name = 'other')"
    )
    assert "other" not in sealed(db)
    fill(db, horizon_s=0)
    assert_views_equal(db)
    # A whole job deleted: its rollup goes with it.
    db.execute("DELETE FROM jobs WHERE name = 'night'")
    assert sealed(db) == {"early", "other"}
    fill(db, horizon_s=0)
    assert_views_equal(db)


def test_truncating_attempts_resets_marks_cuts_and_rollups(sweep: psycopg.Connection) -> None:
    db = sweep
    ledger(db, seed=4)
    fill(db, horizon_s=0)
    assert sealed(db)
    db.execute("TRUNCATE attempts CASCADE")
    emptied = ["cost_share_marks", "cost_share_cuts", "cost_share_late", "cost_rollup_jobs", "cost_rollups"]
    for table in emptied:
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    # A ledger loaded again over the same times is swept from scratch, not taken for closed.
    ledger_again = random.Random(5)
    job_run(db, "again", 0, 25, ledger_again)
    assert_views_equal(db)
    fill(db, horizon_s=0)
    assert sealed(db) >= {"again"}
    assert_views_equal(db)


def test_a_seal_waits_for_an_uncommitted_change_to_its_job(
    sweep: psycopg.Connection, services: Services
) -> None:
    """Seals run outside the fill's lock on cost_share_marks; the job's seal lock, which the attempts
    trigger takes, keeps a seal from storing figures computed before an insert it could not see."""
    db = sweep
    ledger(db, seed=6)
    fill(db, horizon_s=0)
    db.execute("DELETE FROM cost_rollup_jobs WHERE job_id = (SELECT id FROM jobs WHERE name = 'early')")
    row = db.execute("SELECT id FROM jobs WHERE name = 'early'").fetchone()
    assert row is not None
    with (
        psycopg.connect(services.database_url) as writer,
        psycopg.connect(services.database_url, autocommit=True) as filler,
    ):
        # An error before the call: no busy interval, so no late note and nothing for a rewind to find.
        add_attempt(writer, add_prompt(writer, row[0], "racing"), "small", 1.0, 2.0, endpoint=None)
        sealing = threading.Thread(target=_seal, args=(filler, time.monotonic() + 60))
        sealing.start()
        sealing.join(1.0)
        assert sealing.is_alive(), "the seal did not wait for the open transaction"
        writer.commit()
        sealing.join(60)
    assert "early" in sealed(db)
    assert_views_equal(db)  # the racing attempt is in the stored figures


@pytest.mark.parametrize("state", ["pending", "queued", "held"])
def test_a_job_with_prompts_still_to_run_is_not_sealed_until_they_finish(
    sweep: psycopg.Connection, state: str
) -> None:
    # Its shares may all be final, but its next attempt would unseal it; and checking a running job
    # against the whole open tail on every pump tick was the tick's main cost.
    db = sweep
    job = job_run(db, "running", 0, 10, random.Random(3))
    waiting = add_prompt(db, job, "not yet run", state=state)
    assert fill(db, horizon_s=0).sealed == 0 and sealed(db) == set()
    assert_views_equal(db)  # computed live meanwhile, as the sweep has it
    db.execute("UPDATE prompts SET state = 'failed', error = 'x' WHERE id = %s", (waiting,))
    assert fill(db, horizon_s=0).sealed == 1 and sealed(db) == {"running"}
    assert_views_equal(db)

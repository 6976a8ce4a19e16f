"""`herd report`'s job summary and per-model figures, read in one statement, equal the views'.

herd.reporting.build reads a job's `job_model_costs` rows once and computes its `job_costs` columns
from them with that view's own expressions, so a running job's costs are computed once per report
(they read every attempt of an unsealed job). On a seeded ledger of jobs sealed, unsealed part way
through the fill, with failed prompts, without attempts and without prompts, the summary equals the
job's `job_costs` row and the per-model figures its `job_model_costs` rows, every column as text
(the same digits and the same scale of each numeric).
"""

from __future__ import annotations

import random
from dataclasses import fields

import psycopg
from psycopg.rows import dict_row

from herd.ledger.shares import fill
from herd.reporting.build import _FROM_MODELS, _SUMMARY, JobSummary
from tests.unit.test_cost_rollups import job_run, sealed
from tests.unit.test_cost_shares import horizon_at
from tests.unit.test_costs import add_job, add_prompt

JOBS = ("early", "night", "other", "idle", "empty")


def ledger(db: psycopg.Connection, seed: int) -> None:
    rng = random.Random(seed)
    job_run(db, "early", 0, 30, rng)
    job_run(db, "night", 100, 30, rng)
    job_run(db, "other", 100, 20, rng)
    db.execute(
        "UPDATE prompts SET state = 'failed', error = 'x' WHERE id IN "
        "(SELECT p.id FROM prompts p JOIN jobs j ON j.id = p.job_id AND j.name = 'other' "
        "ORDER BY p.id LIMIT 3)"
    )
    idle = add_job(db, "idle")
    for i in range(4):
        add_prompt(db, idle, f"idle-{i}", state="pending")
    add_job(db, "empty")


def as_text(value: object) -> str | None:
    return None if value is None else str(value)


def assert_summary_is_the_views(db: psycopg.Connection) -> None:
    with db.cursor(row_factory=dict_row) as cur:
        for job in JOBS:
            rows = cur.execute(_SUMMARY, {"job": job}).fetchall()
            want = cur.execute("SELECT * FROM job_costs WHERE job = %s", (job,)).fetchone()
            assert want is not None
            for f in fields(JobSummary):
                assert as_text(rows[0][f.name]) == as_text(want[f.name]), (job, f.name)
            models = cur.execute(
                "SELECT * FROM job_model_costs WHERE job = %s ORDER BY model", (job,)
            ).fetchall()
            got = [r for r in rows if r["m_model"] is not None]
            assert [r["m_model"] for r in got] == [m["model"] for m in models], job
            for r, m in zip(got, models, strict=True):
                for name in _FROM_MODELS:
                    assert as_text(r[f"m_{name}"]) == as_text(m[name]), (job, m["model"], name)


def test_summary_equals_job_costs_and_job_model_costs(db: psycopg.Connection) -> None:
    ledger(db, seed=3)
    assert_summary_is_the_views(db)  # nothing stored: every job live
    fill(db, horizon_s=horizon_at(db, 60))  # 'early' sealed, the others part way
    assert "early" in sealed(db) and "night" not in sealed(db)
    assert_summary_is_the_views(db)
    fill(db, horizon_s=0)
    assert {"early", "night", "other"} <= sealed(db)
    assert_summary_is_the_views(db)


def test_unknown_job_has_no_summary(db: psycopg.Connection) -> None:
    ledger(db, seed=4)
    assert db.execute(_SUMMARY, {"job": "nope"}).fetchall() == []

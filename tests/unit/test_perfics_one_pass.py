"""cost_job_perfics (migration 0015) gives exactly the rows of 0011's, which read every prompt of a job
several times: jobs with unanswered prompts, routed prompts, refinements, several scorers and none,
sealed and live. The previous function runs beside it as pg_temp.previous_perfics."""

from __future__ import annotations

import importlib
import random

import psycopg
import pytest

from herd.ledger.shares import fill
from tests.unit.test_costs import add_attempt, add_final, add_job, add_prompt, add_score

PREVIOUS = importlib.import_module("herd_migrations.versions.0015_perfics_one_pass").PREVIOUS_JOB_PERFICS


def job_of(
    db: psycopg.Connection, name: str, n: int, rng: random.Random, *, routed: bool, scorers: list[str]
) -> int:
    job = add_job(db, name)
    for i in range(n):
        state = rng.choice(["done", "done", "done", "queued", "pending", "failed"])
        prompt = add_prompt(db, job, f"{name}-{i}", state=state)
        if routed and rng.random() < 0.5:
            db.execute("UPDATE prompts SET router_version = 1 WHERE id = %s", (prompt,))
        if state in ("queued", "pending"):
            continue  # never answered
        t = rng.randrange(0, 20_000) / 1000
        first_model = rng.choice(["small", "big"]) if routed else "small"
        first = add_attempt(db, prompt, first_model, t, t + 1, status=rng.choice(["ok", "ok", "error"]))
        final, model = first, first_model
        if rng.random() < 0.3:
            add_attempt(db, prompt, first_model, t + 1, t + 1.5, stage="critique", round_=1)
            final = add_attempt(db, prompt, first_model, t + 1.5, t + 2, stage="refine", round_=1)
        if first_model == "small" and rng.random() < 0.4:
            final = add_attempt(db, prompt, "big", t + 2, t + 3, endpoint="http://big", gpu_count=2)
            model = "big"
        for scorer in scorers:
            for attempt in {first, final}:
                if rng.random() < 0.8:
                    add_score(db, attempt, scorer, rng.choice([0.0, 0.5, 1.0]))
        if state == "done":
            add_final(db, prompt, final, model)
    return job


def rows(db: psycopg.Connection, function: str, job: int) -> list[tuple[object, ...]]:
    return sorted(
        db.execute(f"SELECT * FROM {function}(%s, 'small')", (job,)).fetchall(), key=lambda r: repr(r)
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_rows_as_before_with_unanswered_and_routed_prompts(
    db: psycopg.Connection, seed: int
) -> None:
    rng = random.Random(seed)
    db.execute(PREVIOUS.replace("FUNCTION cost_job_perfics(", "FUNCTION pg_temp.previous_perfics(", 1))
    jobs = [
        job_of(db, "plain", 40, rng, routed=False, scorers=["exact"]),
        job_of(db, "routed", 40, rng, routed=True, scorers=["exact", "judge"]),
        job_of(db, "unscored", 30, rng, routed=False, scorers=[]),
        add_job(db, "empty"),
    ]
    nothing_answered = add_job(db, "waiting")
    for i in range(25):
        add_prompt(db, nothing_answered, f"w{i}", state="pending")
    jobs.append(nothing_answered)
    for sealed in (False, True):
        if sealed:
            db.execute("UPDATE prompts SET state = 'done' WHERE state IN ('queued', 'pending')")
            assert fill(db, horizon_s=0).sealed >= 3
        for job in jobs:
            new, old = rows(db, "cost_job_perfics", job), rows(db, "pg_temp.previous_perfics", job)
            assert new == old, (job, sealed)
    assert rows(db, "cost_job_perfics", nothing_answered)  # the cascade and counterfactual rows, 25 prompts

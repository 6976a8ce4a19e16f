"""The report's per-job functions of migration 0019 give 0017's rows, read in fewer passes.

0019 reads a job's attempts by the range of its prompt ids when no other job's prompt lies inside it,
aggregates only scored prompts per (prompt, model), and costs one policy version from the job's
running totals. Each function runs beside its 0017 text (as `pg_temp.previous_*`) on seeded ledgers
built to reach every branch: jobs whose prompt ids interleave (each prompt is then checked) and a job
that owns its span; routed prompts; critiques and refinements; errors, some before any call; several
scorers, one, and none; prompts under several policy versions, under one, and with budget keeps;
unfinished prompts with attempts; an open tail part way, then every share stored and every job sealed.
"""

from __future__ import annotations

import importlib
import random
from decimal import Decimal

import psycopg
import pytest

from herd.ledger.shares import fill
from tests.unit.test_cost_shares import horizon_at
from tests.unit.test_costs import add_attempt, add_final, add_job, add_prompt, add_score

PASSES = importlib.import_module("herd_migrations.versions.0019_report_passes")

# (function, its 0017 text, the arguments its view passes)
PREVIOUS = [
    ("cost_job_window", PASSES.PREVIOUS_JOB_WINDOW, "%(job)s"),
    ("cost_job_models", PASSES.PREVIOUS_JOB_MODELS, "%(job)s"),
    ("cost_job_perfics", PASSES.PREVIOUS_JOB_PERFICS, "%(job)s, 'small'"),
    ("cost_job_policy_versions", PASSES.PREVIOUS_JOB_POLICY_VERSIONS, "%(job)s"),
]
ENDPOINTS = ["http://e1", "http://e2", "http://e3"]


# What the previous functions call, also as they were: no comparison runs new code on both sides.
CALLED = [
    ("cost_job_window", PASSES.PREVIOUS_JOB_WINDOW),
    ("cost_job_model_sums", PASSES.PREVIOUS_JOB_MODEL_SUMS),
]


def install_previous(db: psycopg.Connection) -> None:
    for name, text in [*CALLED, *((name, text) for name, text, _ in PREVIOUS)]:
        text = text.replace(f"FUNCTION {name}(", f"FUNCTION pg_temp.previous_{name}(", 1)
        for called, _ in CALLED:
            text = text.replace(f"FROM {called}($1)", f"FROM pg_temp.previous_{called}($1)")
            text = text.replace(f"JOIN {called}($1)", f"JOIN pg_temp.previous_{called}($1)")
        db.execute(text)
    calls: dict[str, str] = dict(
        db.execute(
            "SELECT proname, prosrc FROM pg_proc WHERE proname IN "
            "('previous_cost_job_models', 'previous_cost_job_perfics')"
        ).fetchall()
    )
    assert "pg_temp.previous_cost_job_window($1)" in calls["previous_cost_job_models"]
    assert "pg_temp.previous_cost_job_model_sums($1)" in calls["previous_cost_job_perfics"]


def add_prompts(
    db: psycopg.Connection, rng: random.Random, jobs: dict[str, int], n: int, *, interleave: list[str]
) -> dict[str, list[int]]:
    """n prompts for each job of `interleave`, their ids alternating between those jobs."""
    out: dict[str, list[int]] = {name: [] for name in interleave}
    for i in range(n):
        for name in interleave:
            state = rng.choice(["done", "done", "done", "failed", "queued", "pending", "held"])
            prompt = add_prompt(db, jobs[name], f"{name}-{i}", state=state)
            out[name].append(prompt)
    return out


def run_prompt(
    db: psycopg.Connection,
    rng: random.Random,
    prompt: int,
    *,
    routed: bool,
    scorers: list[str],
    versions: list[int | None],
) -> None:
    """A prompt's attempts, scores, version and final answer, as its state allows."""
    state = db.execute("SELECT state FROM prompts WHERE id = %s", (prompt,)).fetchone()
    assert state is not None
    version = rng.choice(versions)
    note = "budget" if rng.random() < 0.2 else None
    db.execute("UPDATE prompts SET policy_version = %s, note = %s WHERE id = %s", (version, note, prompt))
    if routed and rng.random() < 0.5:
        db.execute("UPDATE prompts SET router_version = 1 WHERE id = %s", (prompt,))
    if state[0] == "pending" or rng.random() < 0.1:
        return  # never answered
    t = rng.randrange(0, 30_000) / 1000
    busy = rng.randrange(1, 3000) / 1000
    first_model = rng.choice(["small", "big"]) if routed else "small"
    before_call = rng.random() < 0.05
    first = add_attempt(
        db, prompt, first_model, t, t + busy, endpoint=None if before_call else rng.choice(ENDPOINTS),
        status="error" if before_call or rng.random() < 0.1 else "ok", latency=rng.random() * 3,
    )  # fmt: skip
    final, model = first, first_model
    if rng.random() < 0.1:  # an answer again at a later round (Herd writes none; the schema allows it)
        add_attempt(db, prompt, first_model, t, t + busy, stage="answer", round_=2, endpoint=None)
    if rng.random() < 0.3:
        add_attempt(db, prompt, first_model, t + busy, t + busy + 0.5, stage="critique", round_=1)
        final = add_attempt(db, prompt, first_model, t + busy + 0.5, t + busy + 1, stage="refine", round_=1)
    if first_model == "small" and rng.random() < 0.4:
        final = add_attempt(
            db, prompt, "big", t + 2, t + 3, endpoint="http://big", gpu_count=2, price="2.5", escalated=True
        )
        model = "big"
    for scorer in scorers:
        for attempt in {first, final}:
            if rng.random() < 0.7:
                add_score(db, attempt, scorer, rng.choice([0.0, 0.5, 1.0]))
    if state[0] in ("done", "failed") and rng.random() < 0.9:
        add_final(db, prompt, final, model)


def ledger(db: psycopg.Connection, seed: int) -> list[int]:
    """Four jobs: `mixed` and `routed` interleaved, `own` alone in its span, `waiting` unanswered."""
    rng = random.Random(seed)
    names = ["mixed", "routed", "own", "waiting"]
    jobs = {name: add_job(db, name) for name in names}
    prompts = add_prompts(db, rng, jobs, 25, interleave=["mixed", "routed"])
    prompts |= add_prompts(db, rng, jobs, 30, interleave=["own"])
    add_prompts(db, rng, jobs, 5, interleave=["waiting"])
    for prompt in prompts["mixed"]:
        run_prompt(db, rng, prompt, routed=False, scorers=["exact", "judge"], versions=[1, 2, None])
    for prompt in prompts["routed"]:
        run_prompt(db, rng, prompt, routed=True, scorers=["exact"], versions=[3])
    for prompt in prompts["own"]:
        run_prompt(db, rng, prompt, routed=False, scorers=[] if seed % 2 else ["exact"], versions=[4])
    return list(jobs.values())


def rows(db: psycopg.Connection, function: str, args: str, job: int) -> list[tuple[object, ...]]:
    return sorted(db.execute(f"SELECT * FROM {function}({args})", {"job": job}).fetchall(), key=repr)


def assert_same(db: psycopg.Connection, jobs: list[int], when: str) -> None:
    for job in jobs:
        for name, _, args in PREVIOUS:
            new, old = rows(db, name, args, job), rows(db, f"pg_temp.previous_{name}", args, job)
            if name == "cost_job_policy_versions":
                # One version's cost is the job's total less the rest: the same value, but its
                # numeric scale is the total's (Decimal equality ignores scale), and so are the
                # digits of a quotient by it past the 15th significant one.
                assert [r[:6] for r in new] == [r[:6] for r in old], (job, when)
                for n, o in zip(new, old, strict=True):
                    assert isinstance(n[6], Decimal) and isinstance(o[6], Decimal)
                    assert abs(n[6] - o[6]) <= abs(o[6]) * Decimal("1e-15"), (job, when)
            else:
                assert new == old, (name, job, when)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_same_rows_as_0017_part_way_and_sealed(db: psycopg.Connection, seed: int) -> None:
    install_previous(db)
    jobs = ledger(db, seed)
    spans = db.execute(
        "SELECT j.name, s.own FROM jobs j CROSS JOIN LATERAL cost_job_span(j.id) s ORDER BY j.id"
    ).fetchall()
    assert spans == [("mixed", False), ("routed", False), ("own", True), ("waiting", True)]
    # cost_job_policy_versions' two ways: `mixed` finished prompts under two versions (and NULL,
    # which count(DISTINCT) leaves out), the others under one; `waiting`'s one version is NULL.
    versions = db.execute(
        """SELECT j.name, count(DISTINCT p.policy_version) FROM jobs j JOIN prompts p ON p.job_id = j.id
           WHERE p.state IN ('done', 'failed') GROUP BY j.name ORDER BY j.name"""
    ).fetchall()
    assert dict(versions) == {"mixed": 2, "own": 1, "routed": 1, "waiting": 0}
    assert_same(db, jobs, "nothing stored")
    fill(db, horizon_s=horizon_at(db, 12 + seed))
    assert db.execute("SELECT count(*) FROM cost_tail_shares").fetchone() != (0,)
    assert_same(db, jobs, "part way")
    db.execute("UPDATE prompts SET state = 'done' WHERE state <> 'failed'")
    while (done := fill(db, horizon_s=0)).stored or done.sealed:
        pass
    # Every job with attempts is sealed (`waiting` has none to seal).
    assert db.execute("SELECT count(*) FROM cost_rollup_jobs").fetchone() == (len(jobs) - 1,)
    assert_same(db, jobs, "sealed")

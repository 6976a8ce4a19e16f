"""End to end through real workers on the endpoint double: a calibration job, `herd score`, then the
same policy replayed from the ledger and run live must agree prompt by prompt; `herd calibrate`,
`herd replay --sweep --plot` and a budget job through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from herd.herdfile.model import load_herd
from herd.policy import calibration
from herd.policy import versions as policies
from herd.policy.replay import replay
from herd.policy.spec import Policy
from tests.support.harness import wait_for

N = 16
KEYS = [f"q{i:02d}" for i in range(N)]
POLICY = """\
task: qa
entry: small
tiers:
  - model: small
    measure: first_token_margin
    threshold: 0.35
  - model: medium
    measure: first_token_margin
    threshold: 0.5
  - model: large
"""


def first(margin: float) -> list[float]:
    p = (1 + margin) / 2
    return [p, 1 - p]


def script(double) -> None:  # type: ignore[no-untyped-def]
    """Per prompt: small's margin grows with i (right from q08 on), medium's margin alternates,
    large is always right. Answers name the model and prompt, so finals can be traced."""
    rules = []
    for i, key in enumerate(KEYS):
        rules += [
            {
                "model": "small",
                "match": key,
                "text": key if i >= 8 else "small wrong",
                "first": first(0.05 * i),
            },
            {
                "model": "medium",
                "match": key,
                "text": key if i % 2 else "medium wrong",
                "first": first(0.8 if i % 2 else 0.2),
            },
            {"model": "large", "match": key, "text": key, "first": first(0.6)},
        ]
    double.script(rules)


def docs(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "".join(json.dumps({"id": k, "text": f"question {k}", "reference": k}) + "\n" for k in KEYS)
    )
    return path


def test_replay_equals_live_through_real_workers(make_herd, db, double, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script(double)
    herd = make_herd(HERD_POLICY_TTL_S="0")
    for model in ("small", "medium", "large"):
        herd.start_worker(model)
    path = docs(tmp_path)
    herd.cli("submit", str(path), "--job", "cal", "--task", "qa", "--calibration")
    assert wait_for(db, "cal") == {"done": N}
    herd.cli("score", "cal", "--scorer", "exact")
    config = load_herd(herd.path)
    policy = Policy.from_text(POLICY)
    with psycopg.connect(herd.env["HERD_DATABASE_URL"]) as conn:
        loaded = calibration.load(conn, config, "cal", "qa")
        assert loaded.data.n == N
        policies.record(conn, "qa", policy.to_text(), loaded.job_id, {}, activate=True)
    replayed = replay(loaded.data, policy)
    keys = dict(db.execute("SELECT id, doc_key FROM prompts").fetchall())
    answers = {(keys[p], m): a for p, m, a in db.execute("SELECT prompt_id, model, answer FROM attempts")}
    expected = {}
    for row, pid in enumerate(replayed.prompt_ids):
        final = policy.tiers[int(replayed.final_tier[row])].model
        escalated = {policy.tiers[t].model for t in range(3) if replayed.escalated[t][row]}
        expected[keys[int(pid)]] = (final, answers[(keys[int(pid)], final)], escalated)

    herd.cli("submit", str(path), "--job", "live", "--task", "qa")
    assert wait_for(db, "live") == {"done": N}
    live = {}
    for key, model, answer, version in db.execute(
        """SELECT p.doc_key, f.model, f.answer, p.policy_version FROM prompts p
           JOIN jobs j ON j.id = p.job_id AND j.name = 'live' JOIN finals f ON f.prompt_id = p.id"""
    ):
        escalated = {
            m
            for (m,) in db.execute(
                """SELECT a.model FROM attempts a JOIN prompts p ON p.id = a.prompt_id
                   JOIN jobs j ON j.id = p.job_id AND j.name = 'live' WHERE p.doc_key = %s AND a.escalated""",
                (key,),
            )
        }
        live[key] = (model, answer, escalated)
        assert version == 1
    assert live == expected
    # The policy is not trivial: each tier keeps some prompts.
    assert {final for final, _, _ in expected.values()} == {"small", "medium", "large"}

    # The same comparison through the CLI's replay: its figures are the replayed ones.
    out = herd.cli("replay", "cal", "--task", "qa").stdout
    assert "policy (active version 1)" in out and f"quality: {replayed.quality:.3f}" in out
    sweep = herd.cli("replay", "cal", "--task", "qa", "--sweep", "--plot", str(tmp_path / "sweep.png"))
    assert "Pareto front" in sweep.stdout and (tmp_path / "sweep.png").stat().st_size > 0
    chosen = herd.cli("calibrate", "cal", "--task", "qa", "--match", "large", "--at", "1")
    assert "recorded as version 2 of task qa (active" in chosen.stdout


def test_a_budget_job_through_workers_stays_within_one_attempt(make_herd, db, double, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script(double)
    herd = make_herd(HERD_PUMP_INTERVAL_S="0.5")
    for model in ("small", "medium", "large"):
        herd.start_worker(model)
    budget = 0.0002
    herd.cli("submit", str(docs(tmp_path)), "--job", "b", "--task", "qa", "--budget-usd", str(budget))
    assert wait_for(db, "b", timeout=90) == {"done": N}
    spent, largest = db.execute(
        "SELECT sum(cost_usd), max(cost_usd) FROM attempt_costs WHERE job = 'b'"
    ).fetchone()
    assert float(spent) <= budget + float(largest)
    status = herd.cli("status", "b").stdout
    assert "budget: spent" in status and "candidates held: 0" in status

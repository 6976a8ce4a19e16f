"""A job budget through real Celery workers on the endpoint double, with prompt costs spread 20:1 and the
cheapest escalations released first: the spend stays within one escalation of the cap.

The short documents are the least confident, so the first escalations to `large` are the cheapest: an
estimate taken from them alone would let the long ones through at a twentieth of their cost. Two worker
processes for `large` release concurrently (each step of a budget job may release)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.harness import wait_for

SHORT = [f"s{i}" for i in range(4)]
LONG = [f"l{i:02d}" for i in range(12)]
# USD. `large` costs 1 USD per busy second: a long escalation 1 USD alone (less when it shares the
# endpoint with others in flight), a short one 0.05. An estimate from the short ones would release
# every long document at once: 3 USD or more.
BUDGET = 1.0


def herd_file(double) -> str:  # type: ignore[no-untyped-def]
    model = """  {name}:
    protocol: openai
    endpoints: {url}/v1
    served_model: {name}
    prompt_mode: chat
    max_in_flight: 4
    retries: {{max: 1, backoff_s: 0.05, backoff_max_s: 0.1}}
    gpus: {{type: L4, count: 1, usd_per_hour: {price}}}
"""
    return (
        "models:\n"
        + model.format(name="small", url=double.model_url("small"), price=0)
        + "    escalation: {next: large, measure: first_token_margin, threshold: 0.5}\n"
        + model.format(name="large", url=double.model_url("large"), price=3600)
        + "tasks:\n  qa:\n    kind: qa\n"
    )


def test_the_budget_holds_when_the_first_escalations_are_the_cheapest(
    make_herd, db, double, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    double.script(
        [
            # Every small answer is unsure; the short documents least of all (released first).
            {"model": "small", "match": "SHORT", "text": "maybe", "first": [0.5, 0.45]},
            {"model": "small", "match": "LONG", "text": "maybe", "first": [0.6, 0.35]},
            {"model": "large", "match": "SHORT", "text": "sure", "first": [0.99, 0.005], "delay": 0.05},
            {"model": "large", "match": "LONG", "text": "sure", "first": [0.99, 0.005], "delay": 1.0},
        ]
    )
    docs = tmp_path / "docs.jsonl"
    filler = " lorem ipsum" * 60
    docs.write_text(
        "".join(json.dumps({"id": k, "text": f"short {k} SHORT"}) + "\n" for k in SHORT)
        + "".join(json.dumps({"id": k, "text": f"long {k} LONG{filler}"}) + "\n" for k in LONG)
    )
    herd = make_herd(herd_file(double), HERD_PUMP_INTERVAL_S="0.5")
    herd.start_worker("small")
    herd.start_worker("large")
    herd.start_worker("large")
    herd.cli("submit", str(docs), "--job", "capped", "--task", "qa", "--budget-usd", str(BUDGET))
    assert wait_for(db, "capped", timeout=180) == {"done": len(SHORT) + len(LONG)}
    spent = float(db.execute("SELECT sum(cost_usd) FROM attempt_costs WHERE job = 'capped'").fetchone()[0])
    # The most one escalation cost (all its attempts on `large`): the bound docs/policy.md promises.
    one = float(
        db.execute(
            """SELECT max(c) FROM (SELECT sum(cost_usd) AS c FROM attempt_costs
               WHERE job = 'capped' AND model = 'large' GROUP BY prompt_id) per_prompt"""
        ).fetchone()[0]
    )
    escalated = {
        key
        for (key,) in db.execute(
            "SELECT p.doc_key FROM prompts p JOIN finals f ON f.prompt_id = p.id WHERE f.model = 'large'"
        ).fetchall()
    }
    kept = db.execute("SELECT count(*) FROM prompts WHERE note = 'budget'").fetchone()[0]
    print(
        f"spent {spent:.3f} of {BUDGET} USD; one escalation at most {one:.3f}; to large: {sorted(escalated)}"
    )
    assert spent <= BUDGET + one, (spent, one, sorted(escalated))
    assert set(SHORT) <= escalated  # least confident first
    assert 1 <= len(escalated & set(LONG)) < len(LONG) and kept == len(LONG) - len(escalated & set(LONG))
    assert db.execute("SELECT count(*) FROM prompts WHERE reserved_usd IS NOT NULL").fetchone() == (0,)
    status = herd.cli("status", "capped").stdout
    assert "candidates held: 0" in status and f"kept for lack of budget: {kept}" in status

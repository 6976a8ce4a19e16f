"""The nightly audit end to end: real Celery workers on the endpoint double, the herd file's `audit:`
default, `herd report` and the Prometheus exporter showing the estimate with its interval, and a small
model whose answers turn bad in the middle of the job, which the audit flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import redis
from prometheus_client import generate_latest

from herd.herdfile.model import load_herd
from herd.observability.metrics import HerdCollector, registry_for
from herd.quality.audit import audit_job_name, audited
from herd.reporting.audit import clopper_pearson
from tests.support.cascade import record_guaranteed
from tests.support.harness import herd_yaml, wait_for

RATE = 0.5
FIRST = [f"q{i:02d}" for i in range(40)]
LATER = [f"q{i:02d}" for i in range(40, 80)]
POLICY = """\
task: qa
entry: small
tiers:
  - model: small
    measure: first_token_margin
    threshold: 0.35
  - model: large
"""


def script(double: Any, small_right: bool) -> None:
    """small is sure of every answer (margin 0.8: never escalates), right or not; large is right."""
    rules = []
    for key in FIRST + LATER:
        small = f"answer {key}" if small_right else "a confident wrong answer"
        rules += [
            {"model": "small", "match": f"question {key}", "text": small, "first": [0.9, 0.1]},
            {"model": "large", "match": f"question {key}", "text": f"answer {key}", "first": [0.9, 0.1]},
        ]
    double.script(rules)


def docs(path: Path, keys: list[str]) -> Path:
    # No references: the audit measures agreement with the reference model.
    path.write_text("".join(json.dumps({"id": k, "text": f"question {k}"}) + "\n" for k in keys))
    return path


def report(herd: Any) -> dict[str, Any]:
    return json.loads(herd.cli("report", "night", "--format", "json").stdout)["audit"]  # type: ignore[no-any-return]


def test_an_audited_job_shows_its_estimate_and_the_audit_flags_a_model_turned_bad(  # type: ignore[no-untyped-def]
    make_herd, db, double, services, tmp_path
) -> None:
    script(double, small_right=True)
    herd = make_herd(herd_yaml(double) + f"audit: {{rate: {RATE}}}\n", HERD_POLICY_TTL_S="0")
    with psycopg.connect(herd.env["HERD_DATABASE_URL"]) as conn:
        record_guaranteed(conn, POLICY, bound=0.02)
    for model in ("small", "large"):
        herd.start_worker(model)

    first = {k for k in FIRST if audited("night", k, RATE)}
    out = herd.cli("submit", str(docs(tmp_path / "a.jsonl", FIRST)), "--job", "night", "--task", "qa").stderr
    assert f"audit: {len(first)} new prompts sampled at rate {RATE:g} for large alone" in out
    assert wait_for(db, "night", timeout=180) == {"done": len(FIRST)}
    assert wait_for(db, audit_job_name("night"), timeout=180) == {"done": len(first)}
    audit = report(herd)
    row = audit["rows"][0]
    assert (row["version"], row["measure"], row["prompts"], row["hits"]) == (
        1,
        "agreement",
        len(first),
        len(first),
    )
    assert (row["low"], row["high"]) == clopper_pearson(len(first), len(first))
    assert audit["drop"] is False and audit["cost_usd"] > 0
    table = herd.cli("report", "night").stdout
    assert f"policy version 1: agreement 1.000 [{row['low']:.3f}, 1.000]" in table and "DROP" not in table
    # The large model answered only the audit: the cascade never escalated.
    assert db.execute(
        """SELECT count(*) FROM attempts a JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id
           WHERE j.name = 'night' AND a.model <> 'small'"""
    ).fetchone() == (0,)

    # The small model's server now answers wrongly, as sure as before: the cascade cannot tell, and
    # the rest of the job's documents arrive.
    script(double, small_right=False)
    later = {k for k in LATER if audited("night", k, RATE)}
    herd.cli("submit", str(docs(tmp_path / "b.jsonl", LATER)), "--job", "night", "--task", "qa")
    assert wait_for(db, "night", timeout=180) == {"done": len(FIRST) + len(LATER)}
    assert wait_for(db, audit_job_name("night"), timeout=180) == {"done": len(first) + len(later)}
    audit = report(herd)
    row = audit["rows"][0]
    n = len(first) + len(later)
    assert (row["prompts"], row["hits"]) == (n, len(first))
    low, high = clopper_pearson(len(first), n)
    assert (row["low"], row["high"]) == (low, high) and high < 0.9
    assert audit["drop"] is True
    status = herd.cli("status", "night").stdout
    assert f"agreement {len(first) / n:.3f} [{low:.3f}, {high:.3f}]" in status
    assert "promised 0.900  DROP" in status

    # The exporter shows the same figures, labelled by task (never by job).
    collector = HerdCollector(
        lambda: psycopg.connect(services.database_url, autocommit=True),
        redis.Redis.from_url(services.broker_url),
        ["small", "large"],
        tasks=load_herd(herd.path).tasks,
    )
    try:
        text = generate_latest(registry_for(collector)).decode()
    finally:
        collector.close()
    assert 'herd_audit_drop{task="qa"} 1.0' in text
    assert f'herd_audit_quality{{measure="agreement",task="qa"}} {len(first) / n!r}' in text
    assert 'herd_audit_promised_quality{task="qa"} 0.9' in text
    assert f'herd_audit_prompts{{task="qa"}} {float(n)!r}' in text

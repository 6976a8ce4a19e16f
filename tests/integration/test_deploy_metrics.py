"""A job on real workers, then `herd metrics` (the compose service's argv) scraped over HTTP and parsed
with prometheus_client's parser: every count and the cost equal what the ledger says."""

from __future__ import annotations

import urllib.request
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_cascade import CONFIDENT, UNSURE, jsonl
from tests.support.deploy import compose, native_argv, wait_http
from tests.support.harness import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_endpoint_matches_the_ledger(make_herd, db, double, tmp_path) -> None:
    double.script(
        [
            {"model": "small", "match": "easy", "text": "small says", "first": CONFIDENT},
            {"model": "small", "match": "broken", "text": "x", "errors": [400]},  # a permanent error
            {"model": "small", "match": "", "text": "small unsure", "first": UNSURE},
            {"model": "medium", "match": "", "text": "medium says", "first": CONFIDENT},
        ]
    )
    herd = make_herd()
    for model in ("small", "medium"):  # large has no worker: its queue stays empty, its age 0
        herd.start_worker(model)
    kinds = ("easy", "hard", "broken")
    docs: list[dict[str, object]] = [
        {"id": f"{k}-{i}", "text": f"question {k} {i}"} for k in kinds for i in range(4)
    ]
    herd.cli("submit", str(jsonl(tmp_path / "d.jsonl", docs)), "--job", "night", "--task", "qa")
    assert wait_for(db, "night") == {"done": 8, "failed": 4}

    argv = compose()["services"]["metrics"]["command"]
    cmd, port = native_argv(tuple(argv), tmp_path)
    log = tmp_path / "metrics.log"
    proc = herd.procs.start(cmd, env=herd.env, log=log)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_http(url, proc, log)
    samples = scrape(url)

    assert (
        value(samples, "herd_up", source="postgres") == 1 and value(samples, "herd_up", source="redis") == 1
    )
    rows = db.execute(
        """SELECT model, stage,
                  CASE WHEN status = 'error' THEN 'error' WHEN escalated THEN 'escalated' ELSE 'ok' END,
                  count(*)
           FROM attempts GROUP BY 1, 2, 3"""
    ).fetchall()
    assert rows
    for model, stage, outcome, count in rows:
        assert value(samples, "herd_attempts_total", model=model, stage=stage, outcome=outcome) == count
    exported = sum(v for (name, _), v in samples.items() if name == "herd_attempts_total")
    assert exported == db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 16  # type: ignore[index]

    assert value(samples, "herd_escalations_total", model="small") == 4
    assert value(samples, "herd_escalations_total", model="medium") == 0
    assert value(samples, "herd_errors_total", model="small", kind="http_4xx") == 4

    costs = db.execute("SELECT model, cost_usd, attributed_gpu_hours FROM model_costs").fetchall()
    assert sum(Decimal(cost) for _, cost, _ in costs) > 0
    for model, cost, hours in costs:
        assert value(samples, "herd_attributed_gpu_cost_usd_total", model=model) == pytest.approx(float(cost))
        assert value(samples, "herd_attributed_gpu_hours_total", model=model) == pytest.approx(float(hours))

    ok = dict(
        db.execute("SELECT model, count(*) FROM attempts WHERE status = 'ok' GROUP BY model").fetchall()
    )
    assert value(samples, "herd_attempt_latency_seconds_count", model="small", stage="answer") == ok["small"]
    assert (
        value(samples, "herd_attempt_latency_seconds_bucket", model="medium", stage="answer", le="+Inf") == 4
    )
    busy = dict(db.execute("SELECT model, sum(busy_s) FROM attempts WHERE busy_s IS NOT NULL GROUP BY model"))
    assert value(samples, "herd_attempt_busy_seconds_sum", model="small") == pytest.approx(busy["small"])

    assert value(samples, "herd_prompts", state="done") == 8
    assert value(samples, "herd_prompts", state="failed") == 4
    assert value(samples, "herd_prompts", state="pending") == 0
    # The exporter checks stored references against its herd file: nothing stale here.
    for kind in ("policy", "router", "prompts"):
        assert value(samples, "herd_stale_references", kind=kind, task="") == 0
    for model in ("small", "medium", "large"):
        assert value(samples, "herd_queue_length", model=model) == 0
        assert value(samples, "herd_queue_oldest_age_seconds", model=model) == 0
    # Bounded labels: never a job name, a document key or a prompt id (a task: one of the herd file's,
    # or of a stored version, on herd_stale_references).
    labels = {k for (_, pairs) in samples for k, _ in pairs}
    assert labels <= {"model", "stage", "outcome", "kind", "state", "source", "le", "task"}
    assert not any("night" in v or "easy-" in v for (_, pairs) in samples for _, v in pairs)


def test_queue_length_and_oldest_age_while_no_worker_drains(make_herd, db, double, tmp_path) -> None:
    """A backlog at a model without workers: its Redis queue length and its oldest prompt's age."""
    double.script([], default={"text": "fine", "first": CONFIDENT})
    herd = make_herd()
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "d.jsonl", [{"id": i, "text": f"q {i}"} for i in range(5)])),
        "--job",
        "backlog",
        "--task",
        "qa",
    )
    cmd, port = native_argv(tuple(compose()["services"]["metrics"]["command"]), tmp_path)
    log = tmp_path / "metrics.log"
    proc = herd.procs.start(cmd, env=herd.env, log=log)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_http(url, proc, log)
    samples = scrape(url)
    assert value(samples, "herd_queue_length", model="small") == 5
    assert value(samples, "herd_queued_prompts", model="small") == 5
    assert value(samples, "herd_queue_oldest_age_seconds", model="small") > 0
    assert value(samples, "herd_prompts", state="queued") == 5

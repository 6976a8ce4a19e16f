"""End to end: CLI submit -> real Celery workers on per-model Redis queues -> endpoint double -> Postgres."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.support.harness import herd_yaml, wait_for

CONFIDENT = [0.95, 0.03]
UNSURE = [0.40, 0.35]  # margin 0.05, below every tier's threshold of 0.5


def jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def three_tier_script(double) -> None:  # type: ignore[no-untyped-def]
    double.script(
        [
            {"model": "small", "match": "easy", "text": "small says", "first": CONFIDENT},
            {"model": "small", "match": "", "text": "small unsure", "first": UNSURE},
            {"model": "medium", "match": "medium", "text": "medium says", "first": CONFIDENT},
            {"model": "medium", "match": "", "text": "medium unsure", "first": UNSURE},
            {"model": "large", "match": "", "text": "large says", "first": [0.6, 0.3]},
        ]
    )


def test_three_tier_chain_finalizes_each_prompt_at_its_tier(make_herd, db, double, tmp_path) -> None:
    three_tier_script(double)
    herd = make_herd()
    docs = jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": f"{kind}-{i}", "text": f"question {kind} {i}", "reference": kind}
            for kind in ("easy", "medium", "hard")
            for i in range(3)
        ],
    )
    for model in ("small", "medium", "large"):
        herd.start_worker(model)
    submitted = herd.cli("submit", str(docs), "--job", "night", "--task", "qa")
    assert "added 9 new prompts" in submitted.stderr

    assert wait_for(db, "night") == {"done": 9}
    finals = dict(
        db.execute(
            "SELECT p.doc_key, f.model || ':' || f.answer FROM finals f JOIN prompts p ON p.id = f.prompt_id"
        ).fetchall()
    )
    for i in range(3):
        assert finals[f"easy-{i}"] == "small:small says"
        assert finals[f"medium-{i}"] == "medium:medium says"
        assert finals[f"hard-{i}"] == "large:large says"

    attempts = db.execute(
        """SELECT p.doc_key, a.model, a.escalated, a.first_token_margin, a.mean_entropy, a.mean_nll,
                  a.prompt_tokens, a.generated_tokens, a.compute_s, a.busy_s,
                  a.gpu_count * a.usd_per_gpu_hour
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id ORDER BY p.doc_key, a.id"""
    ).fetchall()
    per_prompt: dict[str, list[str]] = {}
    for key, model, escalated, margin, entropy, nll, ptoks, gtoks, compute_s, gpu_s, price in attempts:
        per_prompt.setdefault(key, []).append(model)
        expected_margin = 0.92 if not escalated else 0.05
        if model == "large":
            expected_margin = 0.3
        assert margin == pytest.approx(expected_margin, abs=1e-6)
        assert entropy > 0 and nll > 0 and gtoks == 2 and ptoks > 0
        assert gpu_s >= 0 and price > 0
        if model == "medium":
            assert compute_s is not None  # TGI's x-compute-time header reached the ledger
    assert per_prompt["easy-0"] == ["small"]
    assert per_prompt["medium-0"] == ["small", "medium"]
    assert per_prompt["hard-0"] == ["small", "medium", "large"]

    exported = herd.cli("export", "night", "--format", "jsonl").stdout.splitlines()
    rows = {r["id"]: r for r in map(json.loads, exported)}
    assert len(rows) == 9
    assert rows["hard-1"]["model"] == "large" and rows["easy-2"]["answer"] == "small says"
    csv_out = tmp_path / "night.csv"
    herd.cli("export", "night", "--format", "csv", "-o", str(csv_out))
    assert csv_out.read_text().splitlines()[0] == "id,answer,model,reference,margin,note"
    assert len(csv_out.read_text().splitlines()) == 10

    status = herd.cli("status", "night").stdout
    assert "done: 9" in status
    assert "66.7%" in status  # small escalated 6 of 9
    assert "50.0%" in status  # medium escalated 3 of 6


def test_resubmitting_the_same_job_adds_nothing(make_herd, db, double, tmp_path) -> None:
    double.script([], default={"text": "fine", "first": CONFIDENT})
    herd = make_herd()
    docs = jsonl(tmp_path / "docs.jsonl", [{"id": i, "text": f"q {i}"} for i in range(20)])
    herd.start_worker("small")
    herd.cli("submit", str(docs), "--job", "j", "--task", "qa")
    assert wait_for(db, "j") == {"done": 20}
    again = herd.cli("submit", str(docs), "--job", "j", "--task", "qa")
    assert "added 0 new prompts" in again.stderr
    time.sleep(1.5)
    counts = db.execute(
        "SELECT (SELECT count(*) FROM prompts), (SELECT count(*) FROM attempts), "
        "(SELECT count(*) FROM finals)"
    ).fetchone()
    assert counts == (20, 20, 20)

    changed = jsonl(tmp_path / "changed.jsonl", [{"id": 0, "text": "q 0"}, {"id": 5, "text": "new text"}])
    result = herd.cli("submit", str(changed), "--job", "j", "--task", "qa", check=False)
    assert result.returncode == 2
    assert "changed.jsonl:2: id '5'" in result.stderr


def test_bad_input_names_the_line_and_writes_nothing(make_herd, db, tmp_path) -> None:
    herd = make_herd()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": "ok"}\n{"id": 3, "txt": "typo"}\n')
    result = herd.cli("submit", str(bad), "--job", "b", "--task", "qa", check=False)
    assert result.returncode == 2
    assert "bad.jsonl:3: `text` must be a non-empty string" in result.stderr
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM prompts").fetchone() == (0,)

    dup = jsonl(tmp_path / "dup.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    result = herd.cli("submit", str(dup), "--job", "b", "--task", "qa", check=False)
    assert "duplicate document ids: id 'a'" in result.stderr
    result = herd.cli("submit", str(dup), "--job", "b", "--task", "nope", check=False)
    assert "unknown task 'nope'" in result.stderr


def test_retryable_errors_retry_then_succeed_or_fail(make_herd, db, double, tmp_path) -> None:
    double.script(
        [
            {
                "model": "small",
                "match": "flaky",
                "text": "recovered",
                "first": CONFIDENT,
                "errors": [503, 429],
            },
            {"model": "small", "match": "down", "text": "never", "errors": [503, 503, 503, 503]},
            {"model": "small", "match": "invalid", "text": "never", "errors": [422]},
            {"model": "small", "match": "nolog", "text": "no logprobs", "logprobs": False},
        ]
    )
    herd = make_herd()
    docs = jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "flaky", "text": "flaky"},
            {"id": "down", "text": "down"},
            {"id": "invalid", "text": "invalid"},
            {"id": "nolog", "text": "nolog"},
        ],
    )
    herd.start_worker("small")
    herd.cli("submit", str(docs), "--job", "r", "--task", "qa")
    assert wait_for(db, "r") == {"done": 1, "failed": 3}

    rows = {
        key: (state, error)
        for key, state, error in db.execute("SELECT doc_key, state, error FROM prompts").fetchall()
    }
    assert rows["flaky"][0] == "done"
    assert rows["down"][0] == "failed" and "HTTP 503" in rows["down"][1]
    assert rows["invalid"][0] == "failed" and "HTTP 422" in rows["invalid"][1]
    assert rows["nolog"][0] == "failed" and "without logprobs" in rows["nolog"][1]

    attempts = {
        key: (status, retries)
        for key, status, retries in db.execute(
            "SELECT p.doc_key, a.status, a.retries FROM attempts a JOIN prompts p ON p.id = a.prompt_id"
        ).fetchall()
    }
    assert attempts == {
        "flaky": ("ok", 2),
        "down": ("error", 2),
        "invalid": ("error", 0),
        "nolog": ("error", 0),
    }
    # A call the server answered with an error held the endpoint: it is charged like any other.
    charged = dict(
        db.execute(
            """SELECT p.doc_key, a.endpoint IS NOT NULL AND a.busy_s > 0
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id"""
        ).fetchall()
    )
    assert charged["invalid"] and charged["nolog"] and charged["flaky"]
    calls = [c["prompt"] for c in double.calls() if c["model"] == "small"]
    assert sum("flaky" in p for p in calls) == 3  # two errors, then the answer
    assert sum("down" in p for p in calls) == 3  # first call plus retries.max = 2
    assert sum("invalid" in p for p in calls) == 1  # a 422 is not retried


def test_worker_killed_mid_task_still_ends_the_prompt_exactly_once(make_herd, db, double, tmp_path) -> None:
    double.script(
        [{"model": "small", "match": "slow", "text": "late answer", "first": CONFIDENT, "delay": 4}],
        default={"text": "quick", "first": CONFIDENT},
    )
    # A short visibility timeout and stale window so redelivery happens within the test.
    herd = make_herd(HERD_VISIBILITY_TIMEOUT_S="3", HERD_STALE_AFTER_S="3")
    docs = jsonl(
        tmp_path / "k.jsonl", [{"id": "slow", "text": "slow one"}, {"id": "fast", "text": "fast one"}]
    )
    victim = herd.start_worker("small")
    herd.cli("submit", str(docs), "--job", "k", "--task", "qa")
    deadline = time.monotonic() + 20
    while not any("slow" in c["prompt"] for c in double.calls()):
        assert time.monotonic() < deadline, "the slow prompt never reached the endpoint"
        time.sleep(0.05)
    herd.stop(victim, signal.SIGKILL)  # no chance to ack, nack or record anything

    herd.start_worker("small")
    assert wait_for(db, "k", timeout=90) == {"done": 2}
    slow_attempts = db.execute(
        "SELECT count(*) FROM attempts a JOIN prompts p ON p.id = a.prompt_id WHERE p.doc_key = 'slow'"
    ).fetchone()
    assert slow_attempts == (1,)
    assert db.execute("SELECT count(*) FROM finals").fetchone() == (2,)
    assert sum("slow" in c["prompt"] for c in double.calls()) >= 2  # it was redelivered


def test_window_bounds_the_broker_and_workers_let_the_rest_in(make_herd, db, double, tmp_path) -> None:
    double.script([], default={"text": "ok", "first": CONFIDENT})
    herd = make_herd(HERD_DISPATCH_WINDOW="5")
    docs = jsonl(tmp_path / "w.jsonl", [{"id": i, "text": f"q {i}"} for i in range(40)])
    result = herd.cli("submit", str(docs), "--job", "w", "--task", "qa")
    assert "sent 5 to the queues" in result.stderr
    states = dict(db.execute("SELECT state, count(*) FROM prompts GROUP BY state").fetchall())
    assert states == {"queued": 5, "pending": 35}
    herd.start_worker("small")
    assert wait_for(db, "w") == {"done": 40}


def test_worker_refuses_to_start_without_its_models_key(make_herd, double) -> None:
    text = herd_yaml(double).replace(
        "    max_in_flight: 4\n", "    api_key_env: HERD_TEST_UNSET_KEY\n    max_in_flight: 4\n", 1
    )
    herd = make_herd(text)
    result = herd.cli("worker", "--model", "small", check=False, timeout=60)
    assert result.returncode == 2
    assert "models.small.api_key_env: environment variable HERD_TEST_UNSET_KEY is not set" in result.stderr

"""One clock, end to end: a worker whose host clock runs 10 minutes ahead (libfaketime) records its
attempts in the database's time, so the job's window, provisioned and attributed cost are those of
the real run (before: provisioned x96, attributed x2, a window ending in the future)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.support.harness import herd_yaml, start_worker, wait_for

LIBFAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
pytestmark = pytest.mark.skipif(not LIBFAKETIME, reason="needs libfaketime (apt-get install faketime)")

SKEW_S = 600
CONFIDENT = [0.95, 0.03]
UNSURE = [0.40, 0.35]


def db_now(db: psycopg.Connection) -> datetime:
    row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_a_worker_ten_minutes_ahead_changes_no_window_and_no_cost(make_herd, db, double, tmp_path) -> None:
    double.script(
        [
            {"model": "small", "match": "easy", "text": "small says", "first": CONFIDENT, "delay": 0.5},
            {"model": "small", "match": "", "text": "small unsure", "first": UNSURE, "delay": 0.5},
            {"model": "medium", "match": "", "text": "medium says", "first": CONFIDENT, "delay": 0.5},
        ]
    )
    herd = make_herd(herd_yaml({"small": double.model_url("small"), "medium": double.model_url("medium")}))
    skewed = {**herd.env, "LD_PRELOAD": str(LIBFAKETIME[0]), "FAKETIME": f"+{SKEW_S}s"}
    # The skew is real: a process started so reads a wall clock 10 minutes ahead.
    ahead = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"], env=skewed, capture_output=True, text=True
    )
    assert float(ahead.stdout) - time.time() > SKEW_S - 60
    # Two hosts for small (B ahead, A right, one endpoint: their calls overlap and share its time),
    # and medium on host A. B logs each task it receives (debug), to show it took part.
    b_log = tmp_path / "worker-small-ahead.log"
    start_worker(herd.procs, skewed, "small", b_log, loglevel="debug")
    herd.start_worker("small")
    herd.start_worker("medium")
    docs = tmp_path / "docs.jsonl"
    kinds = ["easy", "easy", "easy", "hard"] * 4
    lines = [json.dumps({"id": f"d{i:02}", "text": f"{kind} question {i}"}) for i, kind in enumerate(kinds)]
    docs.write_text("\n".join(lines) + "\n")
    t0 = db_now(db)
    herd.cli("submit", str(docs), "--job", "night", "--task", "qa")
    assert wait_for(db, "night", timeout=120) == {"done": 16}
    t1 = db_now(db)
    assert "Task herd.attempt[" in b_log.read_text(errors="replace")  # host B answered some prompts

    attempts = db.execute(
        """SELECT p.doc_key, a.model, a.started_at, a.finished_at, a.latency_s, a.busy_s
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id ORDER BY p.doc_key, a.finished_at"""
    ).fetchall()
    assert len(attempts) == 20  # 16 on small, 4 escalated to medium
    for key, model, started, finished, latency, _ in attempts:
        assert t0 <= started <= finished <= t1, (key, model, started, finished)
        assert (finished - started).total_seconds() == pytest.approx(latency, abs=1e-3)
    by_prompt: dict[str, list[tuple[str, datetime, datetime]]] = {}
    for key, model, started, finished, *_ in attempts:
        by_prompt.setdefault(key, []).append((model, started, finished))
    for steps in by_prompt.values():
        if len(steps) == 2:  # escalated: the medium call began after the small call ended
            (first, _, small_end), (second, medium_start, _) = steps
            assert (first, second) == ("small", "medium") and medium_start >= small_end

    run_s = (t1 - t0).total_seconds()
    row = db.execute(
        """SELECT w.window_s, c.provisioned_gpu_hours, c.attributed_gpu_hours
           FROM job_windows w JOIN job_costs c ON c.job = w.job WHERE w.job = 'night'"""
    ).fetchone()
    assert row is not None
    window_s, provisioned, attributed = float(row[0]), float(row[1]), float(row[2])
    assert 0 < window_s <= run_s
    gpus = 2  # small: 1 L4, medium: 1 A10G (tests/support/harness.py TIERS)
    assert 0 < provisioned * 3600 <= window_s * gpus + 1e-6
    # Attributed time on an endpoint is the time it was busy, shared among overlapping calls: never
    # more than the calls' own busy time, nor than the span of the calls on each endpoint.
    span_s = 0.0
    for model in ("small", "medium"):
        ends = [(s, f) for _, m, s, f, *_ in attempts if m == model]
        span_s += (max(f for _, f in ends) - min(s for s, _ in ends)).total_seconds()
    busy = sum(float(b or 0) for *_, b in attempts)
    assert 0 < attributed * 3600 <= min(busy, span_s) + 1e-6


RETRY_AFTER_S = 4  # the double's Retry-After: the retry waits 4 to 5 s (herdfile Retries.delay_s)


@pytest.mark.parametrize("skew_s", [SKEW_S, -SKEW_S], ids=["sender-ahead", "sender-behind"])
def test_a_retry_waits_its_delay_on_the_worker_that_runs_it(make_herd, db, double, tmp_path, skew_s) -> None:
    """A retry sent by a worker whose clock is 10 minutes off runs on a correct-clock worker after its
    delay (4-5 s), timed from receipt: not 10 minutes later (a sender ahead; before: Celery's ETA was
    the sender's now + delay), and not at once (a sender behind)."""
    double.script(
        [
            {
                "model": "small",
                "match": "flaky",
                "text": "recovered",
                "first": CONFIDENT,
                "errors": [503],
                "retry_after": str(RETRY_AFTER_S),
            }
        ]
    )
    herd = make_herd(herd_yaml({"small": double.model_url("small")}, backoff_max_s=RETRY_AFTER_S + 2))
    skewed = {**herd.env, "LD_PRELOAD": str(LIBFAKETIME[0]), "FAKETIME": f"{skew_s:+d}s"}
    sender_log = tmp_path / "worker-small-skewed.log"
    sender = start_worker(herd.procs, skewed, "small", sender_log)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "flaky", "text": "flaky question"}) + "\n")
    herd.cli("submit", str(docs), "--job", "retry", "--task", "qa")
    deadline = time.monotonic() + 60
    while "retry 1 in" not in sender_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, sender_log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    # The skewed host sent the retry (and may hold it, waiting); stopped, it leaves the message in
    # Redis for the correct host: a warm shutdown restores the messages it holds unacked.
    herd.stop(sender)
    assert [c["status"] for c in double.calls()] == [503]

    herd.start_worker("small")  # this host's clock: right
    ready = time.time()
    assert wait_for(db, "retry", timeout=60) == {"done": 1}  # before, sender ahead: 10 minutes
    calls = double.calls()
    assert [c["status"] for c in calls] == [503, 200]
    # The delay ran on the receiver, from receipt (after `ready`, give or take the log poll): at least
    # the Retry-After (before, sender behind: at once), and not much more than its 1 s of jitter.
    waited_s = calls[1]["time"] - ready
    assert RETRY_AFTER_S - 0.5 <= waited_s <= RETRY_AFTER_S + 1 + 15, waited_s
    retries = db.execute("SELECT a.retries FROM attempts a JOIN prompts p ON p.id = a.prompt_id").fetchall()
    assert retries == [(1,)]

"""The housekeeper alone: a job finishes, every worker stops, and within the seal period the job is
sealed and a prompt whose message was lost is re-sent, with no worker running (what KEDA's scale to
zero leaves overnight). Real Postgres, Redis, worker and housekeeper processes, an endpoint double."""

from __future__ import annotations

import ast
import json
import re
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psycopg
import redis

from tests.integration.test_cascade import CONFIDENT, jsonl
from tests.support.deploy import free_port
from tests.support.harness import herd_yaml, start_worker, wait_for
from tests.support.processes import wait_for_log

STALE_S = 3
# The double's herd files give every model timeout_s 5: a request lasts at most 5 s, plus the
# housekeeper's 10 s margin (herd/housekeeping/work.py), so a finished job is sealed about 15 s after
# its last attempt even while other prompts are queued. 90 s leaves room for a busy machine.
SEAL_PERIOD_S = 90


def sealed(db: psycopg.Connection, job: str) -> bool:
    row = db.execute(
        "SELECT EXISTS (SELECT FROM cost_rollup_jobs s JOIN jobs j ON j.id = s.job_id WHERE j.name = %s)",
        (job,),
    ).fetchone()
    return bool(row and row[0])


def queued_prompt_ids(broker: redis.Redis, queue: str) -> Counter[int]:
    """The prompt id of each message waiting on `queue`: Celery's message headers carry the task's
    arguments, (prompt id, model, stage, round), as `argsrepr`."""
    messages = broker.lrange(queue, 0, -1)
    return Counter(ast.literal_eval(json.loads(m)["headers"]["argsrepr"])[0] for m in messages)  # type: ignore[union-attr]


def test_with_every_worker_stopped_the_housekeeper_alone_seals_and_resends(
    make_herd, db, double, services, tmp_path: Path
) -> None:
    double.script([{"model": "small", "match": "", "text": "yes", "first": CONFIDENT}])
    herd = make_herd(herd_yaml({"small": double.model_url("small")}), HERD_STALE_AFTER_S=str(STALE_S))
    # A worker whose pump never ticks in this test: whatever happens below is the housekeeper's doing.
    worker_env = {**herd.env, "HERD_PUMP_INTERVAL_S": "3600"}
    worker = start_worker(herd.procs, worker_env, "small", tmp_path / "worker.log")
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "night.jsonl", [{"id": i, "text": f"n {i}"} for i in range(6)])),
        "--job",
        "night",
        "--task",
        "qa",
    )
    assert wait_for(db, "night") == {"done": 6}
    herd.stop(worker)  # every worker stops (KEDA scaled the model to zero)

    # A job submitted after that, whose messages then die with a Redis that restarts empty.
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "lost.jsonl", [{"id": i, "text": f"l {i}"} for i in range(3)])),
        "--job",
        "lost",
        "--task",
        "qa",
    )
    broker = redis.Redis.from_url(services.broker_url)
    broker.flushdb()
    time.sleep(STALE_S + 1)
    assert not sealed(db, "night") and broker.llen("herd.small") == 0  # nobody did anything meanwhile

    port = free_port()
    log = tmp_path / "housekeeper.log"
    keeper = herd.procs.start(
        [sys.executable, "-m", "herd", "housekeeper", "--port", str(port)], env=herd.env, log=log
    )
    wait_for_log(keeper, log, "housekeeper: every", "herd housekeeper")
    deadline = time.monotonic() + SEAL_PERIOD_S
    while not (sealed(db, "night") and broker.llen("herd.small") >= 3) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sealed(db, "night"), log.read_text()[-3000:]
    # The lost prompts, and only they, are re-sent: once per stale period while nobody consumes them
    # (the seal may come a few stale periods after the first re-send), all three each time.
    lost = {
        row[0]
        for row in db.execute(
            "SELECT p.id FROM prompts p JOIN jobs j ON j.id = p.job_id WHERE j.name = 'lost'"
        )
    }
    resent = queued_prompt_ids(broker, "herd.small")
    assert set(resent) == lost and len(set(resent.values())) == 1, (resent, log.read_text()[-3000:])
    assert keeper.poll() is None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        assert response.status == 200 and response.read() == b"leading\n"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert "herd_housekeeper_sealed_jobs_total 1.0" in metrics
    counted = re.search(r"^herd_housekeeper_resent_prompts_total (\S+)$", metrics, re.M)
    assert counted and float(counted[1]) % 3 == 0 and float(counted[1]) >= sum(resent.values())

    # The re-sent messages are real: a worker that comes back finishes the job from them.
    start_worker(herd.procs, worker_env, "small", tmp_path / "worker2.log")
    assert wait_for(db, "lost") == {"done": 3}


def test_a_report_on_a_finished_unsealed_job_seals_it_first(make_herd, db, double, tmp_path: Path) -> None:
    double.script([{"model": "small", "match": "", "text": "yes", "first": CONFIDENT}])
    herd = make_herd(herd_yaml({"small": double.model_url("small")}))
    worker_env = {**herd.env, "HERD_PUMP_INTERVAL_S": "3600"}  # no pump: nobody seals but the report
    worker = start_worker(herd.procs, worker_env, "small", tmp_path / "worker.log")
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "night.jsonl", [{"id": i, "text": f"n {i}"} for i in range(5)])),
        "--job",
        "night",
        "--task",
        "qa",
    )
    assert wait_for(db, "night") == {"done": 5}
    herd.stop(worker)
    assert not sealed(db, "night")
    first = herd.cli("report", "night", "--format", "csv")
    assert sealed(db, "night") and "sealed" in first.stderr
    again = herd.cli("report", "night", "--format", "csv")
    assert again.stdout == first.stdout and "sealed" not in again.stderr  # read from the stored rows

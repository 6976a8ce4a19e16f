"""The plan of a fault-injection run (benchmarks/faults.py): its settings, the prompts, the doubles'
script, and the faults at seeded points of the job's progress."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._lib.faults_figures import MODELS

JOB, TASK = "faults", "qa"
CONFIDENT, UNSURE = [0.95, 0.03], [0.40, 0.35]  # margins 0.92 and 0.05 against thresholds of 0.5


@dataclass
class Plan:
    prompts: int = 1000
    seed: int = 1
    worker_kills: int = 5
    faults_from: float = 0.05  # faults fire between these fractions of the prompts finished
    faults_until: float = 0.9
    endpoint_down_s: float = 60.0
    down_model: str = "medium"
    service_down_s: float = 5.0  # how long Redis and Postgres stay down after their SIGKILL
    empty_redis: bool = True  # Redis restarted without its files, twice: the second at the stale sweep
    partition_s: float = 30.0  # the workers cut off from Redis and Postgres (0: no partition)
    stale_after_s: float = 30.0
    visibility_timeout_s: int = 20
    pump_interval_s: float = 2.0
    dispatch_window: int = 40
    latency_s: float = 0.5  # per successful model call: paces the run to outlast the fault window
    timeout_s: float = 3.0  # the models' client timeout
    hang_s: float = 6.0  # a hang: longer than timeout_s
    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 4.0
    max_in_flight: int = 4
    deadline_s: float = 600.0  # from submit: give up and report what is stuck
    faults: dict[str, float] = field(
        default_factory=lambda: {
            "status424": 0.05,
            "status5xx": 0.05,
            "status429": 0.03,
            "malformed": 0.02,
            "hang": 0.02,
        }
    )


SHORT = Plan(
    prompts=150,
    worker_kills=2,
    endpoint_down_s=8.0,
    service_down_s=2.0,
    partition_s=10.0,
    stale_after_s=15.0,
    visibility_timeout_s=10,
    pump_interval_s=1.0,
    dispatch_window=20,
    latency_s=0.5,
    timeout_s=2.0,
    hang_s=4.0,
    backoff_s=0.2,
    backoff_max_s=1.0,
    deadline_s=150.0,  # the partition and the empty Redis hold parts of the job up to ~25 s longer
)


@dataclass
class Event:
    """A fault: fired once `after` of the prompts are finished (done or failed), or, for a restart, at
    `at` seconds after submit. A kill with `down_s` schedules its restart that long after it."""

    action: str  # kill-worker | kill-redis | kill-redis-empty | kill-redis-at-sweep | kill-postgres |
    # kill-endpoint | cut-network, and for each with `down_s` its start-... (start-redis-empty, ...) or
    # heal-network
    target: str = ""
    after: float | None = None  # fraction of prompts finished
    at: float | None = None  # seconds after submit
    down_s: float = 0.0
    fired_at: float | None = None  # seconds after submit, when the action completed
    note: str = ""
    open_prompts: int | None = None  # prompts neither done nor failed at that moment (last poll)


def double_script(plan: Plan) -> dict[str, Any]:
    d = plan.latency_s
    return {
        "rules": [
            {"model": "small", "match": "(easy)", "text": "small says", "first": CONFIDENT, "delay": d},
            {"model": "small", "match": "", "text": "small unsure", "first": UNSURE, "delay": d},
            {"model": "medium", "match": "(medium)", "text": "medium says", "first": CONFIDENT, "delay": d},
            {"model": "medium", "match": "", "text": "medium unsure", "first": UNSURE, "delay": d},
            {"model": "large", "match": "", "text": "large says", "first": [0.6, 0.3], "delay": d},
        ]
    }


def write_docs(path: Path, plan: Plan) -> None:
    """About 60% easy prompts (confident on small), 25% medium, 15% hard (they reach large), seeded."""
    rng = random.Random(f"docs|{plan.seed}")
    with path.open("w") as fh:
        for i in range(plan.prompts):
            kind = rng.choices(("easy", "medium", "hard"), weights=(60, 25, 15))[0]
            text = f"question q{i:05d} ({kind}): what is {i} plus {i}?"
            fh.write(json.dumps({"id": f"q{i:05d}", "text": text, "reference": str(2 * i)}) + "\n")


def schedule(plan: Plan) -> list[Event]:
    """Seeded faults at random points of the job's progress (so they hit a running job on any machine):
    Redis goes down in the first part and Postgres in the second (and faults_run.py holds a service's
    kill while another service is down or an empty-Redis fault is under way), so they never overlap;
    the endpoint outage and the empty Redis start in the first half; worker kills anywhere, the last
    one at `faults_until`; the partition (faults_netns.py) in the second half.

    The empty Redis: SIGKILL, its files deleted, started again with no data, so every queued message is
    lost; once the first of the prompts left queued is due for the stale sweep, Redis is killed and
    restarted empty again (kill-redis-at-sweep, scheduled by faults_run.py), so the sweep runs into a
    dead broker and its re-sends must stay due, not wait a second stale period."""
    rng = random.Random(f"schedule|{plan.seed}")
    lo, hi = plan.faults_from, plan.faults_until
    mid = (lo + hi) / 2
    events = [
        Event("kill-redis", after=rng.uniform(lo, mid), down_s=plan.service_down_s),
        Event("kill-postgres", after=rng.uniform(mid, hi), down_s=plan.service_down_s),
        Event("kill-endpoint", plan.down_model, after=rng.uniform(lo, mid), down_s=plan.endpoint_down_s),
    ]
    if rng.random() < 0.5:  # either order of Redis and Postgres
        events[0].after, events[1].after = events[1].after, events[0].after
    for i in range(plan.worker_kills):  # the last one at `faults_until`: the last fault, at a known point
        after = hi if i == plan.worker_kills - 1 else rng.uniform(lo, hi)
        events.append(Event("kill-worker", rng.choice(MODELS), after=after))
    if plan.empty_redis:  # drawn last: the other faults stay where they were for a given seed
        events.append(Event("kill-redis-empty", after=rng.uniform(lo, mid), down_s=plan.service_down_s))
    if plan.partition_s:
        events.append(Event("cut-network", after=rng.uniform(mid, hi), down_s=plan.partition_s))
    return sorted(events, key=lambda e: e.after or 0.0)

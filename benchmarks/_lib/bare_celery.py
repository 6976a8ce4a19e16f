"""The bare Celery baseline of benchmarks/throughput.py (run by bare.py here): a minimal app with one
task that does nothing but count itself (one Redis INCR, so the benchmark knows when N tasks are done
without a result backend).

Configured like Herd's workers (herd/queues.py): JSON, no results, acks_late + reject_on_worker_lost,
prefetch 1, same visibility timeout; the worker runs with the same `--pool threads --concurrency C
--prefetch-multiplier 1 --without-gossip --without-mingle` flags. Task events (Herd's `--task-events`,
`task_send_sent_event`, `task_track_started`) are off unless BENCH_BARE_EVENTS=1, which turns on exactly
Herd's event settings, to show what they cost on their own. BENCH_BARE_TRANSPORT=herd puts Herd's Redis
transport (herd/broker_transport.py: one Redis client per channel) under this app too, so Herd's own
work per attempt can be told apart from what its transport saves Celery.

    BENCH_BROKER_URL=redis://... celery -A benchmarks._lib.bare_celery worker -Q bench.bare --pool threads
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from celery import Celery

from herd.broker_transport import install as install_herd_transport

QUEUE = "bench.bare"
COUNTER = "bench:bare:done"
TASK = "bench.noop"
EVENTS = os.environ.get("BENCH_BARE_EVENTS") == "1"
if os.environ.get("BENCH_BARE_TRANSPORT") == "herd":
    install_herd_transport()

app = Celery("bench_bare")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    worker_send_task_events=EVENTS,
    task_send_sent_event=EVENTS,
    task_track_started=EVENTS,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)

_lock = threading.Lock()
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:  # one client (thread-safe connection pool) per process
            _client = redis.Redis.from_url(app.conf.broker_url)
        return _client


@app.task(name=TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop(*_: Any) -> None:
    _redis().incr(COUNTER)

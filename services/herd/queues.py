"""The Celery application: configuration, per-model queues and publishing, in one place.

`celery -A herd.queues flower` and `herd worker` load this module. Configuration is a promise
evaluated on first use, so importing it (or `herd --help`) connects to nothing and starts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Celery

from herd import broker_transport, brokerpolicy, redact
from herd.broker_errors import PublishError
from herd.settings import get_settings
from herd.urls import broker_url
from herd.vocabulary import Dispatch

TASK_ATTEMPT = "herd.attempt"

# What an unreachable broker raises: kombu's connection errors and redis-py's, and `publish`'s.
BROKER_DOWN: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    PublishError,
)


# Seconds a broker command may wait for its reply, and a connect for its handshake (_config says why).
BROKER_SOCKET_TIMEOUT_S = 10.0
BROKER_CONNECT_TIMEOUT_S = 5.0


def queue_for(model: str) -> str:
    return f"herd.{model}"


def _config() -> dict[str, Any]:
    settings = get_settings()
    return {
        "broker_url": broker_url(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        # Answers live in Postgres; Celery keeps no results, so Redis stays small.
        "task_ignore_result": True,
        # Ack after the work is recorded. A worker that dies mid-task leaves its message to be
        # redelivered; the ledger's unique constraints make the second run harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Off: with it on, a worker whose Redis is killed can stop with "Unrecoverable error" and exit
        # status 0 while reconnecting (celery/celery#9250, seen in benchmarks/faults.py), leaving its
        # model without a worker. Tasks running through a broker outage finish and record their
        # outcome; an ack lost with the connection only means a redelivery, which the ledger replays.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            # A message left unacked by a worker that died is restored by a sweep. kombu's default
            # sweep runs every interval x throttle = 100 s, so a killed worker's messages came back
            # only via the stale pump; sweep every interval instead (one small Redis query per
            # worker), so they return within visibility_timeout + interval.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
            # kombu opens its Redis connections with no socket timeout: a command whose reply never
            # comes (a peer gone silently: a partition, a host that died without a RST) blocks its
            # thread for minutes (the kernel gives up on unacknowledged data after tcp_retries2, ~15
            # min) or for good (a request acknowledged, its reply lost with the peer's socket), and a
            # worker whose pump thread blocks so re-sends no lost prompt meanwhile. Bounded, the command
            # fails as a lost connection (redis-py's TimeoutError, one of kombu's connection errors)
            # and is retried. Herd's
            # commands are small and a healthy Redis answers them in milliseconds; the longest
            # legitimate wait is the consumer's BRPOP, 1 s (kombu's brpop_timeout), read only once
            # readable. kombu's health_check_interval (25 s) stays: a connection idle that long is
            # PINGed before use, now also within the timeout.
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
        },
        "broker_connection_retry_on_startup": True,
        # With HERD_TASK_EVENTS, Flower sees every task from the moment it is published; without,
        # queue lengths (from the broker) and, once Flower enables events on the workers, the tasks
        # they receive. herd/settings.py says why off by default.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_track_started": settings.task_events,
        "task_default_queue": "herd.default",
        "worker_hijack_root_logger": False,
    }


# Worker, Flower and CLI alike: no credentials in any log line or traceback (herd/redact.py).
redact.install_log_redaction()
broker_transport.install()  # one Redis client per channel, not one per command (herd/broker_transport.py)
app = Celery("herd", include=["herd_workers.tasks"])
app.add_defaults(_config)


def check_broker(timeout_s: float = 5.0) -> list[str]:
    """Connect to the broker once, within `timeout_s` seconds, or raise kombu's OperationalError
    (the CLI prints it as one line); then judge its eviction policy and persistence
    (herd/brokerpolicy.py): EvictingBrokerError for a Redis that may evict queued messages, unless
    HERD_ALLOW_EVICTING_BROKER; the warnings to show otherwise. `herd submit` calls it before writing
    anything, so a broker that is down leaves no job behind whose prompts wait a stale period for their
    messages; workers and `herd serve` before they start."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0, timeout=timeout_s)
    settings = get_settings()
    judged = brokerpolicy.check(
        broker_url(settings), allow_evicting=settings.allow_evicting_broker, timeout_s=timeout_s
    )
    return judged.warnings


def publish(dispatches: Iterable[Dispatch]) -> int:
    """Send one message per (prompt id, model, stage, round) to that model's queue: ids only. Returns
    how many were sent; raises PublishError (naming the ones not sent) for any failure, so a caller
    can leave exactly those prompts due again (herd.ledger.steps.mark_due) instead of waiting a
    stale period for them."""
    todo = list(dispatches)
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for prompt_id, model, stage, round_ in todo:
                args = (prompt_id, model, stage, round_)
                app.send_task(
                    TASK_ATTEMPT,
                    args=args,
                    # What Flower shows as the task's arguments. Given, Celery skips its own `saferepr`
                    # of them: 0.1 ms of a worker's CPU per message; these four never
                    # need its truncation.
                    argsrepr=repr(args),
                    kwargsrepr="{}",
                    queue=queue_for(model),
                    producer=producer,
                )
                sent += 1
    except Exception as exc:  # whatever a broken producer raises, the message is not sent
        raise PublishError(todo[sent:], exc) from exc
    return sent

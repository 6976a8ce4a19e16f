"""A retry's delay header becomes an ETA on the clock of the worker that receives the message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from kombu.message import Message

from herd.queues import TASK_ATTEMPT, app
from herd_workers.delays import DELAY_HEADER, ReceiptTimedRequest, delay_headers, receipt_delay_s
from herd_workers.tasks import attempt


def message(extra_headers: Mapping[str, object]) -> Message:
    """A task message as Celery's own protocol builds it (as the retry of `_retry` is sent: no ETA)."""
    headers, properties, body, _ = app.amqp.as_task_v2(
        "task-1", TASK_ATTEMPT, args=(1, "small", "answer", 0), kwargs={}, retries=1
    )
    assert headers["eta"] is None
    return Message(
        body=json.dumps(body),
        headers={**headers, **extra_headers},
        properties=properties,
        delivery_info={"exchange": "", "routing_key": "herd.small"},
        content_type="application/json",
        content_encoding="utf-8",
    )


def test_the_delay_starts_when_the_message_is_received() -> None:
    before = datetime.now(UTC)
    request = ReceiptTimedRequest(message(delay_headers(4.5)), app=app, task=attempt)
    after = datetime.now(UTC)
    assert before + timedelta(seconds=4.5) <= request.eta <= after + timedelta(seconds=4.5)
    assert request.request_dict["eta"] == request.eta.isoformat()  # what the task and Flower see
    assert attempt.Request is ReceiptTimedRequest


@pytest.mark.parametrize("value", [0, -3])
def test_no_delay_runs_at_once(value: float) -> None:
    assert ReceiptTimedRequest(message({DELAY_HEADER: value}), app=app, task=attempt).eta is None


def test_a_message_without_the_header_keeps_its_own_eta() -> None:
    eta = "2026-12-07T03:00:00+00:00"  # a retry sent by a Herd before this one: an absolute ETA
    request = ReceiptTimedRequest(message({"eta": eta}), app=app, task=attempt)
    assert request.eta == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert ReceiptTimedRequest(message({}), app=app, task=attempt).eta is None


def test_an_unreadable_delay_runs_the_retry_now_rather_than_dropping_it() -> None:
    for value in ["soon", None, float("nan"), float("inf"), [1]]:
        assert receipt_delay_s({DELAY_HEADER: value}) is None, value
    assert receipt_delay_s({DELAY_HEADER: "2.5"}) == 2.5
    assert receipt_delay_s({DELAY_HEADER: -1}) == 0.0
    assert receipt_delay_s({}) is None

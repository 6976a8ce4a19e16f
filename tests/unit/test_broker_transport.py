"""Herd's Redis transport (herd/broker_transport.py) against the real Redis: one client per channel
pool, and messages on the wire exactly as kombu's own transport writes them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu.connection import Connection

from herd import broker_transport
from herd.queues import app, publish
from tests.support.harness import Services


def test_redis_urls_get_one_client_per_pool_and_keep_their_scheme(services: Services) -> None:
    broker_transport.install()
    with Connection(services.broker_url) as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker_transport.Channel)
        assert conn.as_uri().startswith("redis://")  # what Flower reads to find its Redis broker view
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.connection_pool is channel.pool
        channel._pool = None  # what kombu does when the connection is lost: the next pool is new
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        assert second.ping()


@pytest.fixture
def celery_app(services: Services) -> Iterator[Celery]:
    """Herd's Celery app on the test broker, its connection pools closed after (they would keep
    whichever broker URL the app had when they were made)."""
    app.close()
    app.conf.broker_url = services.broker_url
    yield app
    app.close()


def test_the_celery_app_publishes_through_it_in_kombus_own_message_format(
    services: Services, db: object, celery_app: Celery
) -> None:
    with celery_app.connection_for_write() as conn:
        assert isinstance(conn.default_channel, broker_transport.Channel)
    assert publish([(7, "small", "answer", 0), (8, "small", "critique", 1)]) == 2
    raw = redis.Redis.from_url(services.broker_url).lrange("herd.small", 0, -1)
    messages = [json.loads(m) for m in reversed(raw)]  # LPUSH: newest first
    assert [m["headers"]["task"] for m in messages] == ["herd.attempt", "herd.attempt"]
    # Flower shows argsrepr; Herd writes it itself instead of Celery's slower saferepr, same text.
    assert [m["headers"]["argsrepr"] for m in messages] == [
        "(7, 'small', 'answer', 0)",
        "(8, 'small', 'critique', 1)",
    ]
    first = messages[0]
    assert first["properties"]["body_encoding"] == "base64"
    assert first["properties"]["delivery_info"]["routing_key"] == "herd.small"
    args, kwargs, _embed = json.loads(base64.b64decode(first["body"]))
    assert (args, kwargs) == ([7, "small", "answer", 0], {})

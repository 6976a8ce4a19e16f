"""Herd's Redis transport (herd/broker_transport.py) against the real Redis: one client per channel
pool, and messages on the wire exactly as kombu's own transport writes them."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator

import kombu.exceptions
import pytest
import redis
from celery import Celery
from kombu.common import ignore_errors
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer

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


def test_a_channel_whose_connection_was_closed_under_it_fails_as_a_lost_connection(
    services: Services, db: object
) -> None:
    """A worker that loses Redis drops its kombu Connection, which detaches the transport
    (`transport.client = None`) and closes its channels, dropping their pools. A task that finishes
    after that is acked, and a channel closed after it restores the messages it has unacked: both need
    a new pool, and kombu's `_connparams` read `self.connection.client.hostname`, an AttributeError
    that Celery's `ack_log_error` and kombu's `ignore_errors` let through, and that stopped the worker.
    Now a ConnectionError, which they ignore; the messages wait in Redis's unacked index for kombu's
    visibility sweep."""
    broker_transport.install()
    queue = Queue("herd.detached", Exchange("herd.detached"), "herd.detached")
    with Connection(services.broker_url) as conn:
        channel = conn.channel()
        producer = Producer(channel)
        for n in (1, 2):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="herd.detached", declare=[queue])
        finished, running = (channel.basic_get("herd.detached", no_ack=False) for _ in range(2))
        assert finished is not None and running is not None  # in flight: unacked
        channel.connection.client = None  # what kombu's Connection.collect / close do to the transport
        channel._disconnect_pools()  # what closing the channel does first
        with pytest.raises(redis.exceptions.ConnectionError):
            finished.ack()
        finished.ack_log_error(logging.getLogger(__name__), conn.connection_errors)  # Celery's ack
        ignore_errors(conn, channel.close)  # Celery's consumer closing it: it must not raise
        with pytest.raises(redis.exceptions.ConnectionError):  # nor any client, cached or new
            channel._create_client()
        with pytest.raises(redis.exceptions.ConnectionError):
            channel._connparams()
        unacked = channel.unacked_key
    assert redis.Redis.from_url(services.broker_url).hlen(unacked) == 2
    # Not lost: kombu's sweep (here with no visibility timeout) puts them back on their queue.
    with Connection(services.broker_url, transport_options={"visibility_timeout": 0}) as conn:
        again = conn.channel()
        again.qos.restore_visible()
        back = [again.basic_get("herd.detached", no_ack=True) for _ in range(2)]
        assert sorted(m.decode()["n"] for m in back if m is not None) == [1, 2]


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


def test_a_broker_that_never_answers_fails_a_command_instead_of_blocking_it_forever(
    services: Services, celery_app: Celery
) -> None:
    """A peer gone silently (a partition, a host that died without a RST) never answers: without a
    socket timeout, kombu's connection blocked the calling thread for good (a worker's pump thread
    stalled). With Herd's broker options, the command fails as a lost connection, which kombu retries.
    The peer here is a socket that accepts (the kernel's backlog does) and never reads."""
    options = celery_app.conf.broker_transport_options
    assert options["socket_timeout"] > 1  # above the consumer's 1 s BRPOP, which it must not cut short
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        try:
            with Connection(url, transport_options=options) as conn:
                conn.default_channel.client.ping()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - what it raised is the assertion below
            outcome.append(exc)

    try:
        worker = threading.Thread(target=connect, daemon=True)
        worker.start()
        worker.join(timeout=20 * options["socket_timeout"])  # only so a regression fails, not hangs
        assert outcome, "the command blocked with no timeout"
        # kombu raises redis-py's TimeoutError as its own OperationalError (a connection error).
        error = outcome[0]
        assert isinstance(error, kombu.exceptions.OperationalError), outcome
        assert isinstance(error.__cause__ or error.__context__, redis.exceptions.TimeoutError), outcome
    finally:
        silent.close()

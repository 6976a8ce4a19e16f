"""kombu's Redis transport with one Redis client object per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` for every publish, every ack and every
unacked-message bookkeeping step (`Channel.conn_or_acquire` -> `_create_client`). A client object
holds no connection of its own (it borrows one from the channel's pool per command), but with
redis-py 8 building one fills a case-insensitive dict of ~170 response callbacks, upper-casing each
name: 0.17 ms of CPU, three times per Herd attempt, ~15% of a worker's CPU against an instant endpoint
(benchmarks/throughput.py). Building it once per pool gives the same commands on the same
pool; redis-py's client is safe to share between threads (each command takes its own connection).

A channel closed under its producer (a reconnect closes the connection's channels, and a pooled
producer keeps the one it had) raises redis-py's ConnectionError, not kombu's AttributeError on the
missing connection: kombu's `ensure` knows the former as recoverable, reconnects and revives the
producer on a new channel, so a publish after a broker outage rebuilds its channel instead of failing.
So does a channel whose kombu Connection was closed under it (a worker dropping a broken connection):
an ack, or the restore of its unacked messages when it closes, fails as a lost connection, which
Celery and kombu ignore there, instead of an AttributeError that stopped the worker.

Installed for `redis://` and `rediss://` broker URLs by herd/queues.py (`install`), under kombu's own
alias, so URLs, `as_uri()` and Flower's broker view are unchanged. Sentinel URLs keep kombu's transport.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
import redis.exceptions
from kombu.transport import redis as kombu_redis

# What `install` points kombu's aliases at: this module's Transport, by import path.
TRANSPORT_PATH = f"{__name__}:Transport"
_SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):  # kombu's Redis transport is untyped: its methods are Any
    _herd_client: Any = None

    def _check_attached(self) -> None:
        """Raise redis-py's ConnectionError if this channel lost its transport (closed by a reconnect:
        `connection` is None) or its transport lost its kombu Connection (`client` is None: Celery's
        worker, on a lost broker connection, `collect`s it, which detaches the transport, and closes
        it). kombu's own code then reads `self.connection.client.hostname` to build a new pool (the
        close dropped the old one) and raises AttributeError, which escapes where kombu and Celery
        ignore connection errors: acking a task that finished during the outage (in the worker's event
        loop) and restoring a closing channel's unacked messages. The worker stopped with
        "Unrecoverable error" and exit status 1 whenever Redis died with a task in flight. A
        ConnectionError is one of kombu's connection errors: logged and ignored there, recovered from
        everywhere else. The message stays in Redis's unacked index: the visibility sweep restores it,
        and the ledger replays a step already recorded."""
        if self.connection is None:
            raise redis.exceptions.ConnectionError("broker channel closed by a reconnect")
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("broker channel's connection was closed")

    def _connparams(self, asynchronous: bool = False) -> Any:
        # Every new pool (sync or async, so `pool`, `async_pool` and `client` too) starts here.
        self._check_attached()
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]

    def _create_client(self, asynchronous: bool = False) -> Any:
        self._check_attached()  # a cached pool or client must not outlive its connection either
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool  # a new pool after a reconnect (kombu resets `_pool`): a new client for it
        client = self._herd_client
        if client is None or client.connection_pool is not pool:
            client = self._herd_client = super()._create_client(asynchronous=False)  # type: ignore[no-untyped-call]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use this transport in this process. Idempotent."""
    for scheme in _SCHEMES:
        kombu.transport.TRANSPORT_ALIASES[scheme] = TRANSPORT_PATH
        # kombu caches each alias's class on first use; a connection made before `install` cached
        # kombu's own.
        kombu.transport._transport_cache.pop(scheme, None)

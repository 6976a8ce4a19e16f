"""Whether the broker (Redis) may lose Herd's messages on its own: checked when a worker, `herd submit`
or `herd serve` starts.

Celery's Redis transport keeps each model's queue as a list (`herd.<model>`) and the messages being
worked on in a hash (`unacked`), ordinary keys without a TTL. A Redis whose `maxmemory-policy` is
`allkeys-lru`, `allkeys-lfu` or `allkeys-random` (a cache's setting, one click on managed Redis)
evicts them like any cache entry once it is full: queued messages vanish with no error anywhere, and
the stale sweep's re-sends are evicted again (12 of 40 prompts done after 155 s, in a replay of
https://github.com/sidekiq/sidekiq/issues/2883). So Herd refuses such a broker, in one line naming the
policy, unless `HERD_ALLOW_EVICTING_BROKER=1` says that the risk is known (e.g. a Redis with no
`maxmemory` that never fills). BullMQ and Sidekiq check the same at start.

- `noeviction` (Herd's compose file, Kubernetes manifests and embedded Redis) is what a broker wants:
  when full, Redis refuses writes, and a publish fails loudly instead.
- `volatile-*` evicts only keys with a TTL. Herd's queues and unacked messages have none, so they are
  never evicted (once no key with a TTL is left, Redis refuses writes as with `noeviction`): allowed.
- Persistence off (no AOF, no RDB snapshot) is a warning, not a refusal: a restart empties the queues,
  and the stale sweep re-sends every prompt still `queued` after `HERD_STALE_AFTER_S`.

The policy is read with `INFO memory` (allowed by managed Redis that forbid `CONFIG`, such as
ElastiCache and Memorystore); persistence with `INFO persistence` and `CONFIG GET save`. Where neither
may be read, a warning says the policy could not be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis

from herd.errors import UserError

if TYPE_CHECKING:
    import redis

EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


class EvictingBrokerError(UserError):
    """The broker's `maxmemory-policy` evicts keys without a TTL: it may drop queued messages."""


@dataclass(frozen=True)
class BrokerPolicy:
    """What the broker said: `policy` (None: could not be read), `persistent` (None: unknown), and the
    warning lines to show (persistence off, a policy that could not be read, an allowed evicting one)."""

    policy: str | None
    persistent: bool | None
    warnings: list[str] = field(default_factory=list)


def check(url: str, *, allow_evicting: bool, timeout_s: float = 5.0) -> BrokerPolicy:
    """Read the policy of the Redis at `url` and judge it. Raises EvictingBrokerError (one line) for an
    evicting policy unless `allow_evicting`; redis.ConnectionError if it cannot be reached. A broker
    URL that is not Redis (`redis://`, `rediss://`, `unix://`) is not checked."""

    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        return BrokerPolicy(None, None)
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        policy = _info_field(client, "memory", "maxmemory_policy")
        persistent = _persistent(client)
    finally:
        client.close()
    warnings: list[str] = []
    if policy is None:
        warnings.append(
            "cannot read the broker's maxmemory-policy (INFO is not allowed): unless it is noeviction, "
            "Redis may evict queued messages when it is full"
        )
    elif policy in EVICTING:
        line = (
            f"the broker's maxmemory-policy is {policy}: when Redis is full it evicts Herd's queued "
            "messages like cache entries, and prompts stall silently. Set it to noeviction (or a "
            "volatile-* policy), or use a Redis of its own"
        )
        if not allow_evicting:
            raise EvictingBrokerError(f"{line}; HERD_ALLOW_EVICTING_BROKER=1 runs anyway")
        warnings.append(f"{line} (running anyway: HERD_ALLOW_EVICTING_BROKER)")
    if persistent is False:
        warnings.append(
            "the broker has no persistence (appendonly no, no RDB save points): a Redis restart empties "
            "the queues, and their prompts wait HERD_STALE_AFTER_S to be re-sent"
        )
    return BrokerPolicy(policy, persistent, warnings)


def _info_field(client: redis.Redis, section: str, name: str) -> str | None:
    try:
        info = client.info(section)
    except redis.ResponseError:  # INFO renamed or forbidden by an ACL
        return None
    value = info.get(name)
    return None if value is None else str(value)


def _persistent(client: redis.Redis) -> bool | None:
    """True with AOF on or any RDB save point, False with neither, None when `save` cannot be read."""

    aof = _info_field(client, "persistence", "aof_enabled")
    if aof is not None and aof != "0":
        return True
    try:
        saves = client.config_get("save").get("save")
    except redis.ResponseError:  # CONFIG forbidden (managed Redis): RDB snapshots unknown
        return None
    if aof is None:
        return None if not saves else True
    return bool(saves and str(saves).strip())

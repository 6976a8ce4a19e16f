"""`herd flower`: Flower on the herd's broker, showing every model's queue, private unless protected.

Two things Flower does not do by itself:
- Queues. Flower lists the queues its workers consume; with the Redis broker it has no other way to
  find them. A queue whose workers are all down (exactly when its backlog matters) would not be
  listed at all. Herd knows its queues (`herd.<model>` for every model of the herd file): they are
  declared as the app's `task_queues` and added to the queues Flower asks the broker about.
- Exposure. Flower's dashboard (task arguments, worker names) has no login by default. Herd binds it
  to 127.0.0.1 unless told otherwise, and refuses any other address without credentials:
  `FLOWER_BASIC_AUTH=user:password` (from the environment: a command line is visible to every user
  of the machine in `ps`) or Flower's OAuth (`--auth` / `FLOWER_AUTH`), unless `--allow-unauthenticated`
  says the network is trusted.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from typing import Any

from herd.errors import UserError

LOOPBACK = "127.0.0.1"


class FlowerConfigError(UserError, ValueError):
    """`herd flower` was asked for something unsafe or impossible; the message says what to do."""


def option(args: Sequence[str], name: str) -> str | None:
    """The value of Flower option `--name` (as `--name=value` or `--name value`), the last one winning."""
    value = None
    flag = f"--{name}"
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
        elif arg == flag and i + 1 < len(args):
            value = args[i + 1]
    return value


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or "" (every interface)


def flower_args(
    args: Sequence[str], env: Mapping[str, str] | None = None, *, allow_unauthenticated: bool = False
) -> list[str]:
    """Flower's arguments for `herd flower ARGS`: ARGS with `--address=127.0.0.1` added when no address
    is given. Raises FlowerConfigError for credentials on the command line, and for a non-loopback
    address without credentials (unless `allow_unauthenticated`)."""
    env = os.environ if env is None else env
    if option(args, "basic_auth") is not None or option(args, "basic-auth") is not None:
        raise FlowerConfigError(
            "pass Flower's credentials in FLOWER_BASIC_AUTH=user:password, not on the command line "
            "(every user of this machine can read a command line)"
        )
    out = list(args)
    if option(args, "unix_socket") or option(args, "unix-socket") or env.get("FLOWER_UNIX_SOCKET"):
        return out  # a socket file: its permissions decide who can connect
    address = option(args, "address")
    if address is None:
        address = env.get("FLOWER_ADDRESS")
    if address is None:
        out.append(f"--address={LOOPBACK}")
        return out
    protected = bool(env.get("FLOWER_BASIC_AUTH") or env.get("FLOWER_AUTH") or option(args, "auth"))
    if not is_loopback(address) and not protected and not allow_unauthenticated:
        shown = address or "every interface"
        raise FlowerConfigError(
            f"Flower would listen on {shown} with no login: set FLOWER_BASIC_AUTH=user:password "
            "(or Flower's --auth), use --address=127.0.0.1, or pass --allow-unauthenticated "
            "if this network is trusted"
        )
    return out


def show_every_queue(app: Any, queues: Sequence[str]) -> None:
    """Make Flower list `queues` (with their lengths) whether or not a worker consumes them, and any
    other queue a worker consumes. (Flower lists only the latter, or the app's default queue when
    it knows no worker yet.)"""
    from flower.views import BaseHandler  # noqa: PLC0415 - Flower only when `herd flower` runs
    from kombu.entity import Queue  # noqa: PLC0415 - Flower only when `herd flower` runs

    app.conf.task_queues = [Queue(name) for name in queues]  # type: ignore[no-untyped-call]
    herd_queues = frozenset(queues)

    def every_queue(self: Any) -> list[str]:
        consumed = {
            queue["name"]
            for info in self.application.workers.values()
            for queue in info.get("active_queues", [])
        }
        return sorted(consumed | herd_queues)

    BaseHandler.get_active_queue_names = every_queue

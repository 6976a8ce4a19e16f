"""What a failed publish raises, apart from the Celery app (herd/queues.py) that raises it: code that
only handles the failure (herd/housekeeping/) takes `publish` as a parameter and needs no broker."""

from __future__ import annotations

from collections.abc import Sequence

from herd.errors import ServiceError
from herd.vocabulary import Dispatch


class PublishError(ServiceError):
    """`publish` could not send every message. `unsent`: the dispatches from the first one that failed
    on (that one may in fact have reached Redis: a duplicate message is harmless, a lost one costs a
    stale period); `__cause__`: what was raised (kombu's or redis-py's connection errors, or anything
    else a broken producer raises: every failure of a publish is the broker's, never the step's)."""

    def __init__(self, unsent: Sequence[Dispatch], cause: BaseException) -> None:
        super().__init__(f"{len(unsent)} message(s) not sent: {cause!r}")
        self.unsent: tuple[Dispatch, ...] = tuple(unsent)

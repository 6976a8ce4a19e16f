"""A retry's delay, timed on the clock of the worker that runs it.

Celery turns `task.retry(countdown=s)` into an absolute ETA in the *sending* worker
(`as_task_v2`: eta = its now + s), and the worker that receives the message waits until that ETA on
*its own* clock. Between hosts whose clocks disagree the wait is off by their difference: a retry
sent by a host 10 minutes ahead waited 10 minutes on a correct one, and one sent by a host behind
ran at once. So a retry carries its delay as a relative number of seconds in a message header
(`DELAY_HEADER`) and no ETA; `ReceiptTimedRequest`, the attempt task's `Request` class, turns it
into an ETA on the receiving worker's clock when the message arrives. From there Celery's own ETA
machinery holds it: the message stays unacked in Redis while it waits (acks_late), so a worker that
dies meanwhile loses nothing (the visibility sweep or the stale sweep brings it back), and no worker
slot is held.

The delay runs from receipt, not from sending: time the message spends queued (every worker busy)
comes on top of it, and a message redelivered after its worker died waits its delay again. Both only
lengthen a wait bounded by the model's `retries.backoff_max_s`; neither depends on any clock but the
receiver's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.worker.request import Request

log = logging.getLogger(__name__)

# Seconds (a JSON number >= 0) the receiving worker waits before running the message.
DELAY_HEADER = "herd_delay_s"


def delay_headers(delay_s: float) -> dict[str, float]:
    """The message headers that ask the receiving worker to wait `delay_s` seconds after receipt."""
    return {DELAY_HEADER: max(0.0, float(delay_s))}


def receipt_delay_s(headers: Mapping[str, Any]) -> float | None:
    """The delay in seconds a message's headers ask for, or None when they ask for none.

    An unreadable value (not a finite number) counts as none, with a WARNING: running a retry early
    costs one call within the model's bounded retries, while refusing the message (what Celery does
    with an unreadable ETA) would leave the prompt to the stale sweep."""
    value = headers.get(DELAY_HEADER)
    if value is None:
        return None
    try:
        delay_s = float(value)
    except (TypeError, ValueError):
        delay_s = math.nan
    if not math.isfinite(delay_s):
        log.warning("message %s: unreadable %s %r; running it now", headers.get("id"), DELAY_HEADER, value)
        return None
    return max(0.0, delay_s)


class ReceiptTimedRequest(Request):  # type: ignore[misc]  # celery is untyped: Request is Any
    """A task request whose `herd_delay_s` header becomes its ETA on this worker's clock, at receipt.

    The ETA goes into the request's fields before Celery reads them, so everything downstream sees
    an ordinary ETA task: the worker's strategy schedules it on its timer, `task.request.eta` and
    Flower show it. A message without the header (a first attempt; a retry an older Herd sent with
    an absolute ETA) is left as it came."""

    def __init__(
        self, message: Any, *args: Any, headers: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        fields: Mapping[str, Any] = message.headers if headers is None else headers
        delay_s = receipt_delay_s(fields)
        if delay_s is not None:
            eta = datetime.now(UTC) + timedelta(seconds=delay_s)
            fields = {**fields, "eta": eta.isoformat() if delay_s > 0 else None}
        super().__init__(message, *args, headers=dict(fields), **kwargs)

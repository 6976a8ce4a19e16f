"""Reading logprobs off the wire, shared by every protocol, so each treats odd values the same way.

Servers send values JSON cannot hold as something else: vLLM turns a NaN logprob into `null`
(pydantic), Python-based servers write a bare `NaN`, constrained decoding gives `-Infinity` (or -9999)
to masked alternatives. The chosen token's logprob is what the uncertainty of the answer rests on:
without a finite value the answer cannot be judged, which is a PermanentError (the same request would
get the same answer again), never a TypeError escaping the backend. An alternative without a usable
value is left out: it carries no probability mass the measures could use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from herd.backends.base import MissingLogprobsError


def number(value: object) -> float | None:
    """`value` as a float, or None when it is missing, not a number, or NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        result = float(value)
    except ValueError:
        return None
    return None if math.isnan(result) else result


def chosen_logprob(value: object, endpoint: str) -> float:
    """The generated token's logprob. Raises MissingLogprobsError (a PermanentError) unless it is a
    finite number: null, NaN and ±Infinity would make every measure of the answer NaN or infinite."""
    result = number(value)
    if result is None or not math.isfinite(result):
        shown = "null" if value is None else repr(value)
        raise MissingLogprobsError(
            f"{endpoint} returned a token without a usable logprob ({shown})", endpoint=endpoint
        )
    return result


def alternatives(pairs: Iterable[tuple[object, object]]) -> tuple[tuple[str, float], ...]:
    """(token, logprob) alternatives in the server's order, without those whose logprob is missing,
    NaN or +Infinity. -Infinity (a masked token, probability 0) is kept: it is a real, if empty, value."""
    kept = []
    for token, value in pairs:
        logprob = number(value)
        if logprob is not None and logprob != math.inf:
            kept.append((str(token) if token is not None else "", logprob))
    return tuple(kept)

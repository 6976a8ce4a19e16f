"""What an attempt's outcome was, in bounded words: the kind of an error, and whether an attempt is
an answer at all.

An attempt is *not an answer* when it is an error (`status = 'error'`: an HTTP failure past the
retries, a timeout, an unreachable endpoint, an empty answer, ...) or was cut off at max_new_tokens
(`finish_reason = 'length'`: the answer may be incomplete; the pipeline escalates it whenever a next
model exists). In a calibration sample such an attempt is no evidence of the model's quality either
way, so it is never scored as a wrong answer (herd.policy.calibration, herd.reporting.versions).

`ERROR_KINDS` is also the bounded `kind` label of the Prometheus exporter (herd.observability.metrics):
error texts are written by herd/backends/transport.py and herd/cascade/pipeline.py; first match wins.
Free text never becomes a label.
"""

from __future__ import annotations

import re

from psycopg import sql

ERROR_KINDS: tuple[tuple[str, str], ...] = (
    ("rate_limited", r"^(HTTP 429|overloaded)"),
    ("http_5xx", r"^HTTP 5[0-9][0-9]"),
    ("http_4xx", r"^(HTTP 4[0-9][0-9]|rejected:)"),
    ("timeout", r"^timed out"),
    ("unreachable", r"^cannot reach"),
    ("no_logprobs", r"without (logprobs|token details|top_tokens)|malformed logprobs"),
    ("malformed", r"^(malformed|unreadable)|without choices"),
    ("empty_answer", r"^empty answer"),
    ("template", r"template"),
    ("ledger", r"^cannot record"),
)
OTHER = "other"
# An ok attempt whose generation hit max_new_tokens.
CUT_OFF = "cut_off"

_COMPILED = tuple((kind, re.compile(pattern)) for kind, pattern in ERROR_KINDS)


def error_kind(text: str | None) -> str:
    """The bounded kind of an error text (`ERROR_KINDS`, first match), `other` when none matches."""
    for kind, pattern in _COMPILED:
        if text is not None and pattern.search(text):
            return kind
    return OTHER


def non_answer(ok: bool, error: str | None, finish_reason: str | None) -> str | None:
    """None for an answer; else the kind of non-answer: an error kind, or `cut_off`."""
    if not ok:
        return error_kind(error)
    return CUT_OFF if finish_reason == "length" else None


def error_kind_sql(column: str = "error") -> sql.Composable:
    """`CASE WHEN column ~ pattern THEN kind ... ELSE 'other' END`, the same kinds in SQL (Postgres
    regular expressions read these patterns as Python's `re` does)."""
    when = sql.SQL("WHEN {} ~ {} THEN {}")
    whens = [
        when.format(sql.Identifier(column), sql.Literal(pattern), sql.Literal(kind))
        for kind, pattern in ERROR_KINDS
    ]
    return sql.SQL("CASE {} ELSE {} END").format(sql.SQL(" ").join(whens), sql.Literal(OTHER))

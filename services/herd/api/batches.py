"""The API's batch records (`api_batches`) and OpenAI's Batch object: create, read, list, cancel.
Moving a batch through its lifecycle is the keeper's (herd/api/keeper.py). Every query names the
owner: another owner's batch is not there at all (404).

A batch's job is the Herd job of the same name (`jobs.name` = the batch id), so `herd status`,
`herd report` and the SQL views take a batch id; its `request_counts` are that job's prompts, counted
when asked.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from herd.api import files
from herd.api.errors import ApiError, bad_request, not_found
from herd.api.pages import keyset_page
from herd.cascade.requests import URLS
from herd.input_errors import InputError
from herd.quality.audit import check_rate

EVENTS = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
# OpenAI takes "24h" only; Herd takes any whole number of seconds, minutes or hours up to a week.
WINDOW = re.compile(r"^([1-9][0-9]*)([smh])$")
MAX_WINDOW = timedelta(days=7)
# OpenAI's limits on `metadata`.
MAX_METADATA = 16
MAX_METADATA_KEY, MAX_METADATA_VALUE = 64, 512
# Metadata keys Herd reads (OpenAI's are free-form strings): the batch's audit (herd/quality/audit.py),
# a share such as "0.02" ("0": none) and a model name; without them the herd file's `audit:` applies.
AUDIT_RATE, AUDIT_REFERENCE = "herd_audit", "herd_audit_reference"

_COLUMNS = (
    "b.id, b.seq, b.owner, b.endpoint, b.input_file_id, b.completion_window, b.status, b.output_file_id, "
    "b.error_file_id, b.errors, b.metadata, b.created_at, b.expires_at, "
    + ", ".join(f"b.{event}_at" for event in EVENTS)
    + ", coalesce(c.total, 0) AS total, coalesce(c.completed, 0) AS completed, "
    "coalesce(c.failed, 0) AS failed"
)
_FROM = """api_batches b
    LEFT JOIN jobs j ON j.name = b.id
    LEFT JOIN LATERAL (
        SELECT count(*) AS total, count(*) FILTER (WHERE p.state = 'done') AS completed,
               count(*) FILTER (WHERE p.state = 'failed') AS failed
        FROM prompts p WHERE p.job_id = j.id AND p.parent_id IS NULL) c ON j.id IS NOT NULL"""


@dataclass(frozen=True)
class BatchRow:
    id: str
    seq: int
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    errors: list[dict[str, Any]] | None
    metadata: dict[str, str] | None
    created_at: datetime
    expires_at: datetime
    in_progress_at: datetime | None
    finalizing_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    expired_at: datetime | None
    cancelling_at: datetime | None
    cancelled_at: datetime | None
    total: int
    completed: int
    failed: int

    def to_openai(self) -> dict[str, Any]:
        def ts(value: datetime | None) -> int | None:
            return int(value.timestamp()) if value is not None else None

        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": ts(self.created_at),
            "expires_at": ts(self.expires_at),
            **{f"{event}_at": ts(getattr(self, f"{event}_at")) for event in EVENTS},
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


def window(value: object) -> timedelta:
    """`completion_window` as a duration. Raises ApiError (400) for anything else."""
    match = WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise bad_request(
            "completion_window must be a duration such as 24h (OpenAI's only value), 90m or 3600s",
            "completion_window",
        )
    amount, unit = int(match.group(1)), match.group(2)
    span = timedelta(seconds=amount * {"s": 1, "m": 60, "h": 3600}[unit])
    if span > MAX_WINDOW:
        raise bad_request("completion_window is at most 168h (a week)", "completion_window")
    return span


def check_metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA:
        raise bad_request(f"metadata must be an object of at most {MAX_METADATA} pairs", "metadata")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > MAX_METADATA_KEY or len(item) > MAX_METADATA_VALUE:
            raise bad_request(
                f"metadata keys are strings of at most {MAX_METADATA_KEY} characters, values of at most "
                f"{MAX_METADATA_VALUE}",
                "metadata",
            )
    if AUDIT_RATE in value:
        audit_rate(value)
    return dict(value)


def audit_rate(metadata: dict[str, str] | None) -> float | None:
    """The audit rate a batch's metadata asks for (`herd_audit`), None when it asks none. Raises
    ApiError (400, param `metadata.herd_audit`) unless it is a share between 0 and 1."""
    if metadata is None or AUDIT_RATE not in metadata:
        return None
    raw = metadata[AUDIT_RATE]
    try:
        return check_rate(float(raw), f"metadata.{AUDIT_RATE}")
    except (ValueError, InputError):
        raise bad_request(
            f'metadata.{AUDIT_RATE} must be a share of the batch\'s requests between 0 and 1, e.g. "0.02" '
            f'(got {raw!r}); "0" turns the herd file\'s audit off',
            f"metadata.{AUDIT_RATE}",
        ) from None


def create(conn: psycopg.Connection, owner: str, body: dict[str, Any]) -> BatchRow:
    """A new batch in `validating` from a create request's JSON body; the keeper validates it."""
    input_file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise bad_request("input_file_id is required", "input_file_id")
    if endpoint not in URLS:
        raise bad_request(f"Herd's batches run {' and '.join(URLS)}, not {endpoint!r}", "endpoint")
    span = window(body.get("completion_window"))
    metadata = check_metadata(body.get("metadata"))
    source = files.get(conn, owner, input_file_id)
    if source is None:
        raise not_found("file", input_file_id)
    if source.purpose != files.INPUT:
        raise bad_request(
            f"file {input_file_id} is a {source.purpose} file, not a batch input", "input_file_id"
        )
    batch_id = f"batch_{secrets.token_hex(12)}"
    conn.execute(
        """INSERT INTO api_batches
               (id, owner, endpoint, input_file_id, completion_window, metadata, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s, now() + %s)""",
        (
            batch_id,
            owner,
            endpoint,
            input_file_id,
            body["completion_window"],
            Jsonb(metadata) if metadata is not None else None,
            span,
        ),
    )
    row = get(conn, owner, batch_id)
    if row is None:
        raise RuntimeError(f"batch {batch_id} vanished after its insert")
    return row


def get(conn: psycopg.Connection, owner: str | None, batch_id: str) -> BatchRow | None:
    """The batch, None when `owner` (None: anyone, for the keeper) has none of that id."""
    with conn.cursor(row_factory=class_row(BatchRow)) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE b.id = %s AND (%s::text IS NULL OR b.owner = %s)",
            (batch_id, owner, owner),
        )
        return cur.fetchone()


def page(
    conn: psycopg.Connection, owner: str, *, after: str | None, limit: int
) -> tuple[list[BatchRow], bool]:
    """One page of the owner's batches, newest first (herd/api/pages.py)."""
    return keyset_page(
        conn,
        BatchRow,
        table="api_batches",
        source=_FROM,
        alias="b",
        columns=_COLUMNS,
        owner=owner,
        after=after,
        limit=limit,
    )


def cancel(conn: psycopg.Connection, owner: str, batch_id: str) -> BatchRow:
    """Ask the keeper to cancel: `validating` and `in_progress` batches become `cancelling` (asking
    twice changes nothing). Raises ApiError: 404 for no such batch, 409 for one that has finished."""
    conn.execute(
        """UPDATE api_batches SET status = 'cancelling', cancelling_at = now()
           WHERE id = %s AND owner = %s AND status IN ('validating', 'in_progress')""",
        (batch_id, owner),
    )
    row = get(conn, owner, batch_id)
    if row is None:
        raise not_found("batch", batch_id)
    if row.status not in ("cancelling", "cancelled"):
        message = f"Batch {batch_id} is {row.status}: only a validating or in-progress batch can be cancelled"
        raise ApiError(409, message, param="id")
    return row

"""The API's file records (`api_files`) and OpenAI's File object. Every query names the owner: another
owner's file is not there at all (404), whatever its id."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from herd.api.pages import keyset_page
from herd.api.store import FileStore

INPUT = "batch"  # what a client uploads
OUTPUT = "batch_output"  # what Herd writes: a batch's output and error files
_COLUMNS = "id, seq, owner, filename, purpose, bytes, created_at"


@dataclass(frozen=True)
class FileRow:
    id: str
    seq: int
    owner: str
    filename: str
    purpose: str
    bytes: int
    created_at: datetime

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at.timestamp()),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


def new_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def store_file(
    conn: psycopg.Connection,
    store: FileStore,
    *,
    owner: str,
    filename: str,
    purpose: str,
    chunks: Iterable[bytes],
    file_id: str | None = None,
) -> FileRow:
    """A new file from `chunks`, in the caller's transaction (the caller commits)."""
    file_id = file_id or new_id()
    conn.execute(
        "INSERT INTO api_files (id, owner, filename, purpose, bytes) VALUES (%s, %s, %s, %s, 0)",
        (file_id, owner, filename, purpose),
    )
    writer = store.writer(conn, file_id)
    for chunk in chunks:
        writer.write(chunk)
    size = writer.close()
    with conn.cursor(row_factory=class_row(FileRow)) as cur:
        cur.execute(f"UPDATE api_files SET bytes = %s WHERE id = %s RETURNING {_COLUMNS}", (size, file_id))
        row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"file {file_id} vanished while it was written")
    return row


def get(conn: psycopg.Connection, owner: str, file_id: str) -> FileRow | None:
    with conn.cursor(row_factory=class_row(FileRow)) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM api_files WHERE id = %s AND owner = %s", (file_id, owner))
        return cur.fetchone()


def page(
    conn: psycopg.Connection, owner: str, *, after: str | None, limit: int, order: str, purpose: str | None
) -> tuple[list[FileRow], bool]:
    """One page of the owner's files (herd/api/pages.py): (files, has_more)."""
    return keyset_page(
        conn,
        FileRow,
        table="api_files",
        columns=_COLUMNS,
        owner=owner,
        after=after,
        limit=limit,
        desc=order != "asc",
        where="purpose = %(p0)s" if purpose else "TRUE",
        params=(purpose,) if purpose else (),
    )


def delete(conn: psycopg.Connection, store: FileStore, owner: str, file_id: str) -> bool:
    """Delete the owner's file; False when it has none of that id."""
    row = conn.execute("DELETE FROM api_files WHERE id = %s AND owner = %s RETURNING id", (file_id, owner))
    if row.fetchone() is None:
        return False
    store.delete(conn, file_id)
    return True

"""Where the API's file bytes live, behind one small interface (`FileStore`), streamed both ways.

Two stores (HERD_API_FILE_STORE):
- `postgres` (the default): chunks of at most 1 MiB in `api_file_chunks`, in the ledger's database.
  Herd needs Postgres anyway, so there is nothing more to run, back up or share between replicas of
  the server; a file is written in the same transaction as its row and the batch status that points at
  it, so a crash never leaves half a file behind a finished batch.
- a directory path: one file per id, written beside and renamed into place. For a deployment that
  would rather keep large files out of the database; every replica must see the same directory.
An S3-compatible store would be a third class with the same three methods.

Memory is one chunk either way: writers buffer up to CHUNK_BYTES, readers yield chunk by chunk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import psycopg

CHUNK_BYTES = 1024 * 1024
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


class FileWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> int:
        """Finish the file; returns its size in bytes."""
        ...


class FileStore(Protocol):
    def writer(self, conn: psycopg.Connection, file_id: str) -> FileWriter:
        """A writer for a new file. With the postgres store its chunks are part of `conn`'s transaction
        (the file's `api_files` row must exist in it first)."""
        ...

    def read(self, file_id: str) -> Iterator[bytes]:
        """The file's bytes, a chunk at a time, on a connection of its own."""
        ...

    def delete(self, conn: psycopg.Connection, file_id: str) -> None: ...


class _PostgresWriter:
    def __init__(self, conn: psycopg.Connection, file_id: str) -> None:
        self._conn, self._file_id = conn, file_id
        self._buffer = bytearray()
        self._seq = 0
        self._size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= CHUNK_BYTES:
            self._flush(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def _flush(self, chunk: bytes) -> None:
        self._conn.execute(
            "INSERT INTO api_file_chunks (file_id, seq, data) VALUES (%s, %s, %s)",
            (self._file_id, self._seq, chunk),
        )
        self._seq += 1

    def close(self) -> int:
        if self._buffer:
            self._flush(bytes(self._buffer))
            self._buffer.clear()
        return self._size


class PostgresStore:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def writer(self, conn: psycopg.Connection, file_id: str) -> FileWriter:
        return _PostgresWriter(conn, file_id)

    def read(self, file_id: str) -> Iterator[bytes]:
        # One chunk per query, by key, each in its own short transaction: no cursor or snapshot held
        # open between chunks, so a slow client holds a pooled connection and nothing else.
        with self._connect() as conn:
            seq = 0
            while True:
                row = conn.execute(
                    "SELECT data FROM api_file_chunks WHERE file_id = %s AND seq = %s", (file_id, seq)
                ).fetchone()
                conn.commit()
                if row is None:
                    return
                yield bytes(row[0])
                seq += 1

    def delete(self, conn: psycopg.Connection, file_id: str) -> None:
        conn.execute("DELETE FROM api_file_chunks WHERE file_id = %s", (file_id,))


class _DirectoryWriter:
    def __init__(self, path: Path) -> None:
        self._path = path
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        self._temp = Path(temp)
        self._handle = os.fdopen(fd, "wb")
        self._size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._size += len(data)

    def close(self) -> int:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._temp, self._path)
        return self._size


class DirectoryStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, file_id: str) -> Path:
        if not file_id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"not a file id: {file_id!r}")  # ids are Herd's own; never a path
        return self.root / file_id

    def writer(self, conn: psycopg.Connection, file_id: str) -> FileWriter:
        return _DirectoryWriter(self._path(file_id))

    def read(self, file_id: str) -> Iterator[bytes]:
        with self._path(file_id).open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def delete(self, conn: psycopg.Connection, file_id: str) -> None:
        self._path(file_id).unlink(missing_ok=True)


def make_store(setting: str, connect: Connect) -> FileStore:
    """The store HERD_API_FILE_STORE names: "postgres", or a directory."""
    if setting == "postgres":
        return PostgresStore(connect)
    return DirectoryStore(Path(setting).expanduser())

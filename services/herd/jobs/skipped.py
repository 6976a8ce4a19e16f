"""Files `herd submit --skip-unreadable` could not read (an encrypted PDF, a scanned PDF without a
text layer, a corrupt DOCX): stored per job (migration 0007) so `herd status` and `herd export` list
them after the night's run, instead of a line that scrolled away in the submit's output."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from herd.jobs.documents import InputFile


@dataclass(frozen=True)
class Skipped:
    doc_key: str  # the key the document would have had (herd/jobs/documents.py's rule)
    path: str  # as the user spelled it
    reason: str


class Collector(list[Skipped]):
    """Passed as `documents.read(on_unreadable=...)`: keeps each unreadable file as it is met."""

    def __call__(self, file: InputFile, reason: str) -> None:
        self.append(Skipped(file.key, str(file.path), reason))


def store(conn: psycopg.Connection, job_id: int, skipped: Iterable[Skipped]) -> int:
    """Record the skipped files of `job_id` (a resubmit updates the reason); returns how many."""
    rows = [(job_id, s.doc_key, s.path, s.reason) for s in skipped]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO skipped_files (job_id, doc_key, path, reason) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (job_id, doc_key)
                   DO UPDATE SET path = excluded.path, reason = excluded.reason""",
                rows,
            )
    return len(rows)


def listed(conn: psycopg.Connection, job_id: int) -> list[Skipped]:
    """The job's skipped files in key order, minus any that a later submit read after all."""
    rows = conn.execute(
        """SELECT s.doc_key, s.path, s.reason FROM skipped_files s
           WHERE s.job_id = %s
             AND NOT EXISTS (SELECT FROM prompts p WHERE p.job_id = s.job_id AND p.doc_key = s.doc_key)
           ORDER BY s.doc_key""",
        (job_id,),
    ).fetchall()
    return [Skipped(str(r[0]), str(r[1]), str(r[2])) for r in rows]

"""The SQL of long documents cut into chunks (herd/cascade/chunks.py says when and why). Functions take
an open connection; the caller owns the transaction.

A chunk is a prompt of its own (`prompts.parent_id`, `chunk_index`; migration 0007) whose `fields`
carry the marker `MARK`; its document waits at stage `CHUNKS` until the last chunk finishes, then
moves to stage `combine`. The document's row lock serializes the chunks' ends (`advance_document`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg

from herd.ledger.steps import PromptRow
from herd.vocabulary import Dispatch, PromptState, Stage, StepKey

CHUNKS = "chunks"  # the document's stage while its chunks run (prompts.stage; never an attempt's)
COMBINE = Stage.COMBINE  # the step that merges the chunk answers (an attempt's stage, 0007)
MARK = "_chunk"  # fields key of a chunk prompt: {"parent": id, "index": i, "of": n}
MEASURES = ("first_token_margin", "mean_entropy", "max_entropy", "mean_nll")


def split(
    conn: psycopg.Connection, prompt: PromptRow, key: StepKey, pieces: tuple[str, ...]
) -> list[int] | None:
    """Make the chunk prompts of `prompt` (queued on `key.model`) and park the document at stage
    `CHUNKS`, only if it is still queued at `key`. Run inside a transaction. Returns the ids of the
    chunks to dispatch, in order; None when a duplicate delivery moved the document already."""
    row = conn.execute(
        "SELECT state, model, stage, round, doc_key FROM prompts WHERE id = %s FOR UPDATE", (prompt.id,)
    ).fetchone()
    if row is None or (row[0], row[1], row[2], row[3]) != (
        PromptState.QUEUED,
        key.model,
        key.stage,
        key.round,
    ):
        return None
    total = len(pieces)
    rows = [
        (
            prompt.job_id,
            f"{row[4]}#{key.model}.{index + 1}of{total}",
            piece,
            prompt.reference,
            json.dumps({**prompt.fields, MARK: {"parent": prompt.id, "index": index, "of": total}}),
            piece,
            key.model,
            prompt.id,
            index,
        )
        for index, piece in enumerate(pieces)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO prompts (job_id, doc_key, text, reference, fields, content_hash, model,
                                   state, enqueued_at, parent_id, chunk_index)
               VALUES (%s, %s, %s, %s, %s, md5(%s), %s, 'queued', now(), %s, %s)
               ON CONFLICT (job_id, doc_key) DO NOTHING""",
            rows,
        )
    conn.execute("UPDATE prompts SET stage = %s, enqueued_at = now() WHERE id = %s", (CHUNKS, prompt.id))
    children = conn.execute(
        """SELECT id FROM prompts WHERE parent_id = %s AND model = %s AND state = 'queued'
           ORDER BY chunk_index""",
        (prompt.id, key.model),
    ).fetchall()
    return [int(c[0]) for c in children]


def advance_document(conn: psycopg.Connection, parent: int, model: str) -> tuple[Dispatch, ...]:
    """If document `parent` waits at stage `CHUNKS` on `model` and none of its chunks there is still
    open, move it to `combine` and return that step's dispatch; else nothing. Run inside a transaction:
    the document's row lock makes the chunks' ends take turns, so exactly one moves it."""
    row = conn.execute(
        "SELECT state, model, stage FROM prompts WHERE id = %s FOR UPDATE", (parent,)
    ).fetchone()
    if row is None or (row[0], row[1], row[2]) != (PromptState.QUEUED, model, CHUNKS):
        return ()
    # Counted after taking the lock: a chunk finishing concurrently committed before we got it,
    # or will take the lock after us and see this one finished.
    still = conn.execute(
        """SELECT count(*) FROM prompts WHERE parent_id = %s AND model = %s
           AND state NOT IN ('done', 'failed')""",
        (parent, model),
    ).fetchone()
    if still is None or still[0]:
        return ()
    conn.execute(
        "UPDATE prompts SET stage = %s, round = 0, enqueued_at = now() WHERE id = %s", (COMBINE, parent)
    )
    return ((parent, model, COMBINE, 0),)


@dataclass(frozen=True)
class Part:
    """A chunk's outcome: its final answer (None: it failed, `error` says why) and measures."""

    index: int
    answer: str | None
    error: str | None
    first_token_margin: float | None = None
    mean_entropy: float | None = None
    max_entropy: float | None = None
    mean_nll: float | None = None

    def uncertainty(self, measure: str) -> float | None:
        value: float | None = getattr(self, measure, None)
        return value


def parts(conn: psycopg.Connection, parent: int, model: str) -> list[Part]:
    """The outcomes of document `parent`'s chunks on `model`, in order."""
    rows = conn.execute(
        f"""SELECT c.chunk_index, f.answer, c.error, {", ".join(f"a.{m}" for m in MEASURES)}
            FROM prompts c LEFT JOIN finals f ON f.prompt_id = c.id
            LEFT JOIN attempts a ON a.id = f.attempt_id
            WHERE c.parent_id = %s AND c.model = %s ORDER BY c.chunk_index""",
        (parent, model),
    ).fetchall()
    return [Part(int(r[0]), r[1], r[2], *r[3:]) for r in rows]

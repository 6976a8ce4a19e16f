"""The files benchmarks submit, and waiting for what they submitted to finish."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

MODEL, TASK = "small", "qa"  # the one-model herd of throughput and scale_out (harness.herd_yaml)
FILLER = (
    "Herd runs a herd of open language models as one system for bulk work: small models answer first, "
    "uncertain answers climb to larger ones, and every attempt lands in the Postgres ledger. "
)


def write_questions(path: Path, n: int) -> None:
    """`n` short JSONL questions (~45 characters), ids 0..n-1."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": i, "text": f"What is the capital of country number {i}?"}) + "\n")


def write_records(path: Path, n: int, texts: Sequence[str] | None = None) -> None:
    """`n` JSONL records of ~200 characters: `Document <i>. ` plus texts[i] (if given), padded with
    FILLER."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            head = f"Document {i}. {texts[i]} " if texts is not None else f"Document {i}. "
            out.write(json.dumps({"id": i, "text": head + FILLER[: max(0, 200 - len(head))]}) + "\n")


def finished(conn: psycopg.Connection) -> tuple[int, int]:
    """(prompts done or failed, all prompts) in the ledger."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE state IN ('done', 'failed')), count(*) FROM prompts"
    ).fetchone()
    assert row is not None  # an aggregate always returns its row
    return int(row[0]), int(row[1])


def wait_finished(
    conn: psycopg.Connection, n: int, *, timeout: float, alive: Callable[[], bool], what: str
) -> None:
    """Until all `n` prompts are done or failed, polled every 50 ms; RuntimeError when `alive()` turns
    false (a worker died) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        done, total = finished(conn)
        if done == total == n:
            return
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"{what}: {done}/{n} prompts finished")
        time.sleep(0.05)

"""The cascade's words, one enumeration each. They are `StrEnum`s: each member *is* its string, so
they go into SQL parameters and JSON as they are, and compare equal to what the ledger returns.

The ledger's CHECK constraints (migrations) hold the same sets; a new member needs a migration.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Which of a model's steps an attempt is (docs/architecture.md, "Steps on one model")."""

    ANSWER = "answer"
    CRITIQUE = "critique"
    REFINE = "refine"
    COMBINE = "combine"  # merges a chunked long document's chunk answers (herd/cascade/chunks.py)


class PromptState(StrEnum):
    """Where a prompt is: only in Postgres, in a queue, held for a budget, or finished."""

    PENDING = "pending"
    QUEUED = "queued"
    HELD = "held"  # a budget job's escalation candidate (herd/jobs/budget.py)
    DONE = "done"
    FAILED = "failed"


FINISHED = (PromptState.DONE, PromptState.FAILED)


class AttemptStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class OutcomeKind(StrEnum):
    """What one step did, as the task returns it (logs, tests, Flower's result column)."""

    FINAL = "final"
    ESCALATED = "escalated"
    REFINING = "refining"
    HELD = "held"
    FAILED = "failed"
    CHUNKED = "chunked"  # a long document split into chunk prompts (herd/cascade/chunks.py)
    SKIPPED = "skipped"  # a duplicate or stale delivery: the prompt had moved on

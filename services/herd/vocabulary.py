"""The cascade's words, one enumeration each, and the two shapes every layer passes around: where a
prompt is (`StepKey`) and what a message to a model's queue says (`Dispatch`). This module imports
nothing from Herd, so every layer may use it.

The enumerations They are `StrEnum`s: each member *is* its string, so
they go into SQL parameters and JSON as they are, and compare equal to what the ledger returns.

The ledger's CHECK constraints (migrations) hold the same sets; a new member needs a migration.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    HELD = "held"  # a budget job's escalation candidate (herd/policy/job_budget.py)
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


@dataclass(frozen=True)
class StepKey:
    """Where a prompt is: which model, and which stage/round of that model's work."""

    model: str
    stage: str = Stage.ANSWER
    round: int = 0


# (prompt id, model whose queue gets the message, stage, round)
Dispatch = tuple[int, str, str, int]

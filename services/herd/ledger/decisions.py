"""A step's decision as data, and `apply`, the one place that writes one.

herd/cascade/decide.py decides (a pure function, no SQL); `apply` turns the decision into the ledger's
statements, inside the caller's transaction:

    Final(answer)      store `answer` as the prompt's final one, prompt `done`
    Escalate(model)    the prompt goes to `model`'s `answer` step
    Advance(to)        the prompt goes to the next step of the same model (critique, refine)
    Hold(confidence)   a budget job's escalation candidate parks as `held` (herd/policy/job_budget.py)
    Fail(reason)       prompt `failed` with `reason`

Before any of these, `mark` (an attempt id) is marked escalated and `version` (a policy version) is
recorded on the prompt, when set. Every write checks the prompt is still at the step (or not finished
yet): a duplicate delivery writes nothing and dispatches nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from herd.ledger import steps
from herd.ledger.steps import AttemptRow, NewAttempt
from herd.vocabulary import Dispatch, OutcomeKind, Stage, StepKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Final:
    """Keep `answer`'s text as the prompt's final answer. `answer` is the recorded attempt, or on the
    one-statement path (herd/cascade/pipeline.py) the new attempt not yet recorded."""

    answer: AttemptRow | NewAttempt
    version: int | None = None  # the policy version that decided (None: the herd file)


@dataclass(frozen=True)
class Escalate:
    """Send the prompt to `model`, which starts at its `answer` step."""

    model: str
    mark: int | None = None  # an attempt to mark escalated first (a critique left the answer unsure)
    version: int | None = None


@dataclass(frozen=True)
class Advance:
    """The same model's next step: `to` is a critique or refine step."""

    to: StepKey


@dataclass(frozen=True)
class Hold:
    """Park a budget job's escalation candidate; `confidence` orders the release (None: least sure)."""

    confidence: float | None
    mark: int | None = None
    version: int | None = None


@dataclass(frozen=True)
class Fail:
    """Fail the prompt with `reason` (shown to the user as the prompt's error)."""

    reason: str
    mark: int | None = None
    version: int | None = None


Decision = Final | Escalate | Advance | Hold | Fail


@dataclass(frozen=True)
class Outcome:
    """What happened, for logs and tests, and the dispatches to publish after the commit."""

    kind: OutcomeKind
    dispatches: tuple[Dispatch, ...] = ()


@dataclass(frozen=True)
class Applied:
    """What `apply` wrote. `freed`: the decision took the prompt out of the dispatch window (Final,
    Fail, Hold), True when it held a slot there (a duplicate delivery frees none); None: the prompt is
    still in the window (Escalate, Advance), so nothing is refilled."""

    kind: OutcomeKind
    dispatches: tuple[Dispatch, ...] = ()
    freed: bool | None = None


def apply(conn: psycopg.Connection, prompt_id: int, at: StepKey, decision: Decision) -> Applied:
    """Write `decision` for the prompt's step `at`, in the caller's transaction. Returns what moved and
    the dispatches of the prompt's next step. Raises TypeError for a Final whose answer is not a recorded
    attempt (the one-statement path records those itself, `steps.record_final`)."""
    if isinstance(decision, Advance):
        moved = steps.advance(conn, prompt_id, at, decision.to)
        to = decision.to
        return Applied(OutcomeKind.REFINING, ((prompt_id, to.model, to.stage, to.round),) if moved else ())
    if not isinstance(decision, Final) and decision.mark is not None:
        steps.mark_escalated(conn, decision.mark)
    if isinstance(decision, Escalate):
        if decision.version is not None:
            steps.set_policy_version(conn, prompt_id, decision.version)
        moved = steps.advance(conn, prompt_id, at, StepKey(decision.model))
        dispatch = (prompt_id, decision.model, Stage.ANSWER, 0)
        return Applied(OutcomeKind.ESCALATED, (dispatch,) if moved else ())
    if decision.version is not None:
        steps.set_policy_version(conn, prompt_id, decision.version)
    if isinstance(decision, Hold):
        return Applied(OutcomeKind.HELD, freed=steps.hold(conn, prompt_id, at, decision.confidence))
    if isinstance(decision, Fail):
        # Logged: the worker's log names every failure.
        log.warning("prompt %s failed: %s", prompt_id, decision.reason)
        return Applied(OutcomeKind.FAILED, freed=steps.fail(conn, prompt_id, decision.reason))
    answer = decision.answer
    if not isinstance(answer, AttemptRow):
        raise TypeError(f"prompt {prompt_id}: a final answer must be recorded before it is applied")
    freed = steps.finalize(conn, prompt_id, answer.id, answer.model, answer.answer or "")
    return Applied(OutcomeKind.FINAL, freed=freed)

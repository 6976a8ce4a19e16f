"""What one step of a prompt decides, as a pure function: no SQL, no I/O (docs/architecture.md).

`decide` takes the prompt, the rule that decides for its model (herd/policy/active.py), the step,
the step's attempt and what the job changes, and returns one of the ledger's decisions
(herd/ledger/decisions.py), which `apply` writes. The pipeline's one-statement path for a confident
final answer and its general path both call it, so they agree by construction.

On one model, in order:
- an error attempt fails the prompt (a calibration job: the next model of the herd file answers anyway);
- `answer` with refinement rounds advances to `critique` 1; a critique that finds issues advances to
  its `refine`; a `refine` before the last round advances to the next `critique`;
- otherwise the model's work ends on its latest answer (a critique that found nothing: the answer it
  reviewed, `kept`, marked escalated when the rule finds it unsure): a calibration job sends the
  prompt on to the next model whatever the rule says; an escalated answer with a next model escalates
  (a budget job holds it instead; a next model gone from the herd file fails the prompt); any other
  answer is final.
"""

from __future__ import annotations

from dataclasses import dataclass

from herd.ledger.decisions import Advance, Decision, Escalate, Fail, Final, Hold
from herd.ledger.steps import AttemptRow, NewAttempt, PromptRow
from herd.policy.active import Rule
from herd.vocabulary import AttemptStatus, Stage, StepKey

ANSWER, CRITIQUE, REFINE = Stage.ANSWER, Stage.CRITIQUE, Stage.REFINE


@dataclass(frozen=True)
class Job:
    """What the prompt's job changes about a decision."""

    # A calibration job (jobs.kind = 'calibration'): the herd file's model after this one, which answers
    # the prompt whatever the decision; None: not a calibration job, or its last model.
    calibration_next: str | None = None


def decide(
    prompt: PromptRow,
    rule: Rule,
    key: StepKey,
    attempt: AttemptRow | NewAttempt,
    job: Job,
    kept: AttemptRow | None = None,
) -> Decision:
    """The decision for step `key` of `prompt`, whose attempt is `attempt` (recorded, or about to be).

    `kept`: for a critique that found nothing to fix (`needs_kept`), the model's latest answer, the
    one kept or escalated. Raises RuntimeError when such a critique comes without it (no answer of the
    model is recorded: a bug or a hand-edited ledger)."""
    if attempt.status == AttemptStatus.ERROR:
        if job.calibration_next is not None:  # calibration: the other models still answer
            return Escalate(job.calibration_next)
        return Fail(f"{key.model} {key.stage}: {attempt.error}")
    rounds = rule.rounds
    if key.stage == ANSWER and rounds:
        return Advance(StepKey(key.model, CRITIQUE, 1))
    if key.stage == CRITIQUE and not no_issues(attempt.answer):
        return Advance(StepKey(key.model, REFINE, key.round))
    if key.stage == REFINE and key.round < rounds:
        return Advance(StepKey(key.model, CRITIQUE, key.round + 1))
    answer: AttemptRow | NewAttempt = attempt
    escalated, mark = attempt.escalated, None
    if key.stage == CRITIQUE:
        if kept is None:
            raise RuntimeError(f"prompt {prompt.id}: no answer from {key.model} to keep or escalate")
        answer, escalated = kept, kept.escalated
        if rule.escalates(kept.uncertainty):  # the critique found nothing; the answer stays unsure
            escalated, mark = True, kept.id
    if job.calibration_next is not None:
        return Escalate(job.calibration_next, mark)
    version = rule.version
    if escalated and rule.next is not None:
        if rule.stale is not None:
            # The next model is gone from the herd file: no worker would ever read its queue.
            return Fail(f"{key.model} {key.stage}: cannot escalate: {rule.stale}", mark, version)
        if prompt.budget_usd is None:
            return Escalate(rule.next, mark, version)
        return Hold(rule.confidence(answer.uncertainty), mark, version)
    return Final(answer, version)


def needs_kept(key: StepKey, attempt: AttemptRow | NewAttempt) -> bool:
    """Whether `decide` needs the model's latest answer (`kept`) for this attempt: a critique that
    found nothing to fix ends the model's work on the answer it reviewed."""
    return key.stage == CRITIQUE and attempt.status == AttemptStatus.OK and no_issues(attempt.answer)


def no_issues(critique: str | None) -> bool:
    """The generic critique prompt asks for exactly NO ISSUES when nothing needs fixing."""
    return critique is not None and critique.strip().upper().startswith("NO ISSUES")


def ends(rounds: int, key: StepKey) -> bool:
    """No further step of this model follows `key` when it runs `rounds` refinement rounds: its answer
    is the one that is kept or escalated (a critique may still stop the rounds earlier: `decide`)."""
    return (key.stage == ANSWER and not rounds) or (key.stage == REFINE and key.round == rounds)

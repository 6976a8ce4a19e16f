"""herd/cascade/decide.py without a database: every branch of a step's decision as a table row, each
decided twice, on the recorded attempt (the general path) and on the new attempt before it is recorded
(the pipeline's one-statement path), which must come to the same decision."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from herd.cascade.decide import Job, decide, ends, needs_kept, no_issues
from herd.herdfile.references import StaleReference
from herd.ledger.decisions import Advance, Decision, Escalate, Fail, Final, Hold
from herd.ledger.steps import AttemptRow, NewAttempt, PromptRow
from herd.policy.active import Rule
from herd.policy.spec import CalibrationMap
from herd.vocabulary import StepKey

LIVE = PromptRow(7, 1, "qa", "What is 2+2?", "4", {}, "queued", "small", "answer", 0)
BUDGET = replace(LIVE, budget_usd=Decimal("1.50"))
SURE = Rule("small", "large", "first_token_margin", 0.5, rounds=0)  # margin < 0.5 escalates
REFINED = replace(SURE, rounds=2)
LAST = Rule("large", None, "first_token_margin", None, rounds=0)
VERSIONED = replace(SURE, version=3)
GONE = StaleReference("policy", "qa", "the active policy v3 of task 'qa'", ("model 'huge'",))
STALE = replace(VERSIONED, next="huge", stale=GONE)
P_CORRECT = replace(
    SURE,
    measure="p_correct",
    threshold=0.7,
    calibration=CalibrationMap(measure="first_token_margin", x=[0.0, 1.0], y=[0.0, 1.0]),
)
PLAIN, CALIBRATION = Job(), Job(calibration_next="large")


def row(
    stage: str = "answer",
    round: int = 0,
    *,
    status: str = "ok",
    answer: str | None = "4",
    escalated: bool = False,
    margin: float | None = 0.9,
    error: str | None = None,
    id: int = 11,
) -> AttemptRow:
    return AttemptRow(id, 7, "small", stage, round, status, answer, escalated, error, margin, 0.1, 0.2, 0.3)


KEPT = row("answer", id=5)  # the model's latest answer, reviewed by a critique
UNSURE_KEPT = row("answer", id=5, margin=0.1)


def new(attempt: AttemptRow) -> NewAttempt:
    """The attempt as the pipeline has it before recording it (no id)."""
    shared = NewAttempt.__dataclass_fields__.keys() & AttemptRow.__dataclass_fields__.keys()
    return NewAttempt(**{name: getattr(attempt, name) for name in shared})


def failed(stage: str = "answer", round: int = 0) -> AttemptRow:
    return row(stage, round, status="error", answer=None, error="HTTP 500")


# (name, prompt, rule, step, attempt, job, kept, decision)
TABLE: list[tuple[str, PromptRow, Rule, StepKey, AttemptRow, Job, AttemptRow | None, Decision]] = [
    # answer, no refinement
    ("sure answer: final", LIVE, SURE, StepKey("small"), row(), PLAIN, None, Final(row())),
    ("unsure answer: escalates", LIVE, SURE, StepKey("small"), row(escalated=True), PLAIN, None,
     Escalate("large")),
    ("escalated flag on the last tier: final", LIVE, LAST, StepKey("large"), row(escalated=True), PLAIN,
     None, Final(row(escalated=True))),
    ("policy version recorded on final", LIVE, VERSIONED, StepKey("small"), row(), PLAIN, None,
     Final(row(), version=3)),
    ("policy version recorded on escalation", LIVE, VERSIONED, StepKey("small"), row(escalated=True),
     PLAIN, None, Escalate("large", version=3)),
    ("next model gone from the herd file: fails", LIVE, STALE, StepKey("small"), row(escalated=True),
     PLAIN, None, Fail(f"small answer: cannot escalate: {GONE}", version=3)),
    ("stale next model but a sure answer: final", LIVE, STALE, StepKey("small"), row(), PLAIN, None,
     Final(row(), version=3)),
    # errors
    ("error: fails naming model, stage and error", LIVE, SURE, StepKey("small"), failed(), PLAIN,
     None, Fail("small answer: HTTP 500")),
    ("error on the last tier: fails", LIVE, LAST, StepKey("large"), failed(), PLAIN, None,
     Fail("large answer: HTTP 500")),
    ("error of a refine step: fails", LIVE, REFINED, StepKey("small", "refine", 1),
     failed("refine", 1), PLAIN, None, Fail("small refine: HTTP 500")),
    ("error in a budget job: fails, never held", BUDGET, SURE, StepKey("small"), failed(), PLAIN,
     None, Fail("small answer: HTTP 500")),
    ("error in a calibration job: the next model answers", LIVE, SURE, StepKey("small"), failed(),
     CALIBRATION, None, Escalate("large")),
    # budget
    ("unsure answer in a budget job: held by its confidence", BUDGET, SURE, StepKey("small"),
     row(escalated=True, margin=0.2), PLAIN, None, Hold(0.2)),
    ("held with the policy version", BUDGET, VERSIONED, StepKey("small"), row(escalated=True, margin=0.2),
     PLAIN, None, Hold(0.2, version=3)),
    ("sure answer in a budget job: final", BUDGET, SURE, StepKey("small"), row(), PLAIN, None, Final(row())),
    ("no measure in a budget job: held, least sure", BUDGET, SURE, StepKey("small"),
     row(escalated=True, margin=None), PLAIN, None, Hold(None)),
    # calibration: every model answers whatever the rule says
    ("calibration: a sure answer goes on", LIVE, SURE, StepKey("small"), row(), CALIBRATION, None,
     Escalate("large")),
    ("calibration: an unsure one too", LIVE, SURE, StepKey("small"), row(escalated=True), CALIBRATION,
     None, Escalate("large")),
    ("calibration, budget job: goes on, not held", BUDGET, SURE, StepKey("small"), row(escalated=True),
     CALIBRATION, None, Escalate("large")),
    # refinement: answer -> critique 1 -> refine 1 -> critique 2 -> refine 2
    ("answer with rounds: critique 1", LIVE, REFINED, StepKey("small"), row(), PLAIN, None,
     Advance(StepKey("small", "critique", 1))),
    ("unsure answer with rounds still goes to critique", LIVE, REFINED, StepKey("small"),
     row(escalated=True), PLAIN, None, Advance(StepKey("small", "critique", 1))),
    ("critique with issues: its refine", LIVE, REFINED, StepKey("small", "critique", 1),
     row("critique", 1, answer="The sum is wrong."), PLAIN, None, Advance(StepKey("small", "refine", 1))),
    ("refine before the last round: next critique", LIVE, REFINED, StepKey("small", "refine", 1),
     row("refine", 1), PLAIN, None, Advance(StepKey("small", "critique", 2))),
    ("refine of the last round: final", LIVE, REFINED, StepKey("small", "refine", 2), row("refine", 2),
     PLAIN, None, Final(row("refine", 2))),
    ("refine of the last round, unsure: escalates", LIVE, REFINED, StepKey("small", "refine", 2),
     row("refine", 2, escalated=True), PLAIN, None, Escalate("large")),
    ("critique finds nothing: the reviewed answer is final", LIVE, REFINED, StepKey("small", "critique", 2),
     row("critique", 2, answer="no issues."), PLAIN, KEPT, Final(KEPT)),
    ("critique finds nothing, answer unsure: marked and escalated", LIVE, REFINED,
     StepKey("small", "critique", 1), row("critique", 1, answer="NO ISSUES"), PLAIN, UNSURE_KEPT,
     Escalate("large", mark=5)),
    ("... and held in a budget job", BUDGET, REFINED, StepKey("small", "critique", 1),
     row("critique", 1, answer="NO ISSUES"), PLAIN, UNSURE_KEPT, Hold(0.1, mark=5)),
    ("... and failed when the next model is gone", LIVE, replace(STALE, rounds=1),
     StepKey("small", "critique", 1), row("critique", 1, answer="NO ISSUES"), PLAIN, UNSURE_KEPT,
     Fail(f"small critique: cannot escalate: {GONE}", mark=5, version=3)),
    ("... and sent on in a calibration job", LIVE, REFINED, StepKey("small", "critique", 1),
     row("critique", 1, answer="NO ISSUES"), CALIBRATION, UNSURE_KEPT, Escalate("large", mark=5)),
    ("critique finds nothing on the last tier: final, unmarked", LIVE, replace(LAST, rounds=1),
     StepKey("large", "critique", 1), row("critique", 1, answer="NO ISSUES"), PLAIN, UNSURE_KEPT,
     Final(UNSURE_KEPT)),
    # a long document's combine step decides like an answer
    ("combine: final", LIVE, SURE, StepKey("small", "combine"), row("combine"), PLAIN, None,
     Final(row("combine"))),
    ("combine, unsure: escalates the whole document", LIVE, SURE, StepKey("small", "combine"),
     row("combine", escalated=True), PLAIN, None, Escalate("large")),
    ("combine with rounds: no critique of a combined answer", LIVE, REFINED, StepKey("small", "combine"),
     row("combine"), PLAIN, None, Final(row("combine"))),
    # p_correct: the calibrated measure orders the held candidates
    ("p_correct: held by the calibrated value", BUDGET, P_CORRECT, StepKey("small"),
     row(escalated=True, margin=0.25), PLAIN, None, Hold(0.25)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("prompt", "rule", "key", "attempt", "job", "kept", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in TABLE],
)
def test_decide(
    prompt: PromptRow,
    rule: Rule,
    key: StepKey,
    attempt: AttemptRow,
    job: Job,
    kept: AttemptRow | None,
    expected: Decision,
) -> None:
    assert decide(prompt, rule, key, attempt, job, kept) == expected
    if kept is None:
        # The pipeline's one-statement path decides on the attempt before it has a row: the same
        # decision, a final one keeping that new attempt itself.
        fresh = new(attempt)
        decision = decide(prompt, rule, key, fresh, job)
        assert decision == (Final(fresh, expected.version) if isinstance(expected, Final) else expected)
        assert not isinstance(decision, Final) or decision.answer is fresh


def test_a_critique_that_found_nothing_needs_the_answer_it_reviewed() -> None:
    critique = row("critique", 1, answer="NO ISSUES")
    assert needs_kept(StepKey("small", "critique", 1), critique)
    assert not needs_kept(StepKey("small", "critique", 1), row("critique", 1, answer="Wrong sum."))
    assert not needs_kept(StepKey("small", "critique", 1), failed("critique", 1))
    assert not needs_kept(StepKey("small"), row(answer="NO ISSUES"))
    with pytest.raises(RuntimeError, match="prompt 7: no answer from small to keep or escalate"):
        decide(LIVE, REFINED, StepKey("small", "critique", 1), critique, PLAIN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("NO ISSUES", True), ("  no issues found.", True), ("No issues", True), ("Issues: none", False),
     ("", False), (None, False)],
)  # fmt: skip
def test_no_issues(text: str | None, expected: bool) -> None:
    assert no_issues(text) is expected


@pytest.mark.parametrize(
    ("rounds", "key", "expected"),
    [(0, StepKey("m"), True), (1, StepKey("m"), False), (1, StepKey("m", "critique", 1), False),
     (2, StepKey("m", "refine", 1), False), (2, StepKey("m", "refine", 2), True),
     (0, StepKey("m", "combine"), False)],
)  # fmt: skip
def test_a_model_ends_on_its_answer_or_its_last_refine(rounds: int, key: StepKey, expected: bool) -> None:
    assert ends(rounds, key) is expected

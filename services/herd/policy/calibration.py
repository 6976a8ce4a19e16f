"""A calibration job's attempts as herd.policy CalibrationData arrays: no model call, the ledger only.

Per prompt and model on the task's route (herd file order):
- plain (refinement off): the `answer` attempt: its measures, its score under the scorer, its
  attributed cost (view `attempt_costs`), ok = the attempt succeeded;
- refined (refinement on, for models whose herd file enables `refine`): the deciding attempt, i.e.
  the model's latest successful answer or refinement (a critique answering NO ISSUES stops early):
  its measures and score; cost = every attempt of the model on the prompt (answer, critiques,
  refinements); ok = none of them is an error.

A prompt is left out while unfinished, when a model of the route never answered it, or when a
successful deciding attempt has no score from the scorer (e.g. no reference); `Loaded.left_out` says
how many. A prompt on which a model of the route gave *no answer* (an error, a timeout, an empty or
cut-off answer: herd.ledger.outcomes) is left out too, never scored as a wrong answer: an outage
during the sample says nothing of the model, and keeping it as a 0 makes the model look worse and
the chosen policy escalate too little. `Loaded.non_answers` counts them per model and kind; past
`MAX_NON_ANSWER_SHARE` of the sample, `check_non_answers` refuses the sample unless allowed.
Errors are one-line user errors (InputError, UnknownJobError) raised before anything is written.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from herd.herdfile.model import HerdConfig
from herd.input_errors import InputError
from herd.ledger.jobs import UnknownJobError
from herd.ledger.outcomes import non_answer
from herd.policy.active import herd_rounds
from herd.policy.data import CalibrationData, ModelArrays
from herd.policy.spec import RAW_MEASURES

_ATTEMPTS = f"""
    SELECT c.prompt_id, c.model, c.stage, c.round, c.status, {", ".join(f"a.{m}" for m in RAW_MEASURES)},
           s.score, c.cost_usd, a.error, a.finish_reason
    FROM attempt_costs c
    JOIN attempts a ON a.id = c.attempt_id
    JOIN prompts p ON p.id = c.prompt_id
    LEFT JOIN scores s ON s.attempt_id = c.attempt_id AND s.scorer = %s
    WHERE c.job_id = %s AND p.state IN ('done', 'failed') AND c.model = ANY(%s)
    ORDER BY c.prompt_id, c.model, c.round, c.stage"""


# A sample with more prompts than this share lacking an answer from some model is refused by
# `herd calibrate` and `herd router train` unless allowed: leaving out a fifth of a sample can
# leave out the prompts a model finds hard, and what remains no longer looks like the documents.
MAX_NON_ANSWER_SHARE = 0.1


@dataclass(frozen=True)
class Loaded:
    """`data` holds the prompts every model of the route answered. `left_out`: prompts unfinished,
    unscored or never answered; `unanswered`: prompts left out for a non-answer, and
    `non_answers[model][kind]` how many of them that model gave of each kind."""

    data: CalibrationData
    job_id: int
    route: list[str]
    scorer: str
    scorers: list[str]
    left_out: int
    unanswered: int = 0
    non_answers: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def unanswered_share(self) -> float:
        return self.unanswered / max(self.data.n + self.unanswered, 1)

    def non_answer_text(self) -> str:
        """One line, e.g. `20 of 60 prompts left out for a non-answer (large: 20 http_5xx)`; "" if none."""
        if not self.unanswered:
            return ""
        per_model = "; ".join(
            f"{model}: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            for model, kinds in self.non_answers.items()
        )
        total = self.data.n + self.unanswered
        return (
            f"{self.unanswered} of {total} prompts left out: a model gave no answer, never counted as a "
            f"wrong one ({per_model})"
        )

    def check_non_answers(self, allow: bool, job: str) -> None:
        """InputError when more than MAX_NON_ANSWER_SHARE of the sample lacks an answer, unless `allow`."""
        if allow or self.unanswered_share <= MAX_NON_ANSWER_SHARE:
            return
        raise InputError(
            f"calibration job {job!r}: {self.non_answer_text()}; that is {self.unanswered_share:.0%} of the "
            f"sample, over {MAX_NON_ANSWER_SHARE:.0%}: calibrate on a sample taken while every model "
            "answers, or pass --allow-non-answers to leave them out"
        )


@dataclass(frozen=True)
class _Attempt:
    stage: str
    round: int
    ok: bool
    measures: dict[str, float]
    score: float | None
    cost: float
    non_answer: str | None = None


def calibration_job(conn: psycopg.Connection, herd: HerdConfig, job: str, task: str) -> int:
    """The id of calibration job `job` for `task`; one-line errors otherwise."""
    if task not in herd.tasks:
        raise InputError(f"unknown task {task!r}; the herd file defines: {', '.join(sorted(herd.tasks))}")
    row = conn.execute("SELECT id, task, kind FROM jobs WHERE name = %s", (job,)).fetchone()
    if row is None:
        raise UnknownJobError(f"no job named {job!r}")
    if row[2] != "calibration":
        raise InputError(
            f"job {job!r} is not a calibration job; submit one with `herd submit FILES --job NAME "
            f"--task {task} --calibration`"
        )
    if row[1] != task:
        raise InputError(f"job {job!r} calibrated task {row[1]!r}, not {task!r}")
    return int(row[0])


def job_scorers(conn: psycopg.Connection, job_id: int) -> list[str]:
    rows = conn.execute(
        """SELECT DISTINCT s.scorer FROM scores s JOIN attempts a ON a.id = s.attempt_id
           JOIN prompts p ON p.id = a.prompt_id WHERE p.job_id = %s ORDER BY 1""",
        (job_id,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def load(
    conn: psycopg.Connection, herd: HerdConfig, job: str, task: str, scorer: str | None = None
) -> Loaded:
    """CalibrationData of calibration job `job` for `task` under `scorer` (default: the job's only or
    first scorer by name). Raises UnknownJobError / InputError with one line for: unknown job or task,
    not a calibration job, no scores, an unknown scorer, no complete scored prompt."""
    job_id = calibration_job(conn, herd, job, task)
    scorers = job_scorers(conn, job_id)
    if not scorers:
        answered = conn.execute(
            "SELECT count(*) FROM attempts a JOIN prompts p ON p.id = a.prompt_id WHERE p.job_id = %s "
            "AND a.status = 'ok'",
            (job_id,),
        ).fetchone()
        if answered is not None and answered[0] == 0 and (why := _no_answers(conn, job_id)):
            raise InputError(f"calibration job {job!r}: no model answered ({why}): nothing to choose on")
        raise InputError(f"job {job!r} has no scores: run `herd score {job}` first")
    if scorer is not None and scorer not in scorers:
        raise InputError(f"job {job!r} has no scores from {scorer!r}; its scorers: {', '.join(scorers)}")
    chosen = scorer or scorers[0]
    route = [step.model for step in herd.route(task)]
    per_prompt: dict[int, dict[str, list[_Attempt]]] = defaultdict(lambda: defaultdict(list))
    for row in conn.execute(_ATTEMPTS, (chosen, job_id, route)):
        per_prompt[int(row[0])][str(row[1])].append(_parse(row))
    ids: list[int] = []
    plain: dict[str, list[tuple[float, float, bool, dict[str, float]]]] = {m: [] for m in route}
    refined: dict[str, list[tuple[float, float, bool, dict[str, float]]]] = {
        m: [] for m in route if herd_rounds(herd, m) > 0
    }
    left_out = unanswered = 0
    kinds: dict[str, dict[str, int]] = {}
    for prompt_id, models in sorted(per_prompt.items()):
        rows = {m: _plain(models.get(m, [])) for m in route}
        rows_refined = {m: _refined(models.get(m, [])) for m in refined}
        if any(r is None for r in (*rows.values(), *rows_refined.values())):
            left_out += 1
            continue
        missing = {m: k for m in route if (k := _non_answer(models.get(m, []), m in refined)) is not None}
        if missing:
            unanswered += 1
            for m, kind in missing.items():
                counts = kinds.setdefault(m, {})
                counts[kind] = counts.get(kind, 0) + 1
            continue
        ids.append(prompt_id)
        for m, r in rows.items():
            plain[m].append(r)  # type: ignore[arg-type]
        for m, r in rows_refined.items():
            refined[m].append(r)  # type: ignore[arg-type]
    total = conn.execute("SELECT count(*) FROM prompts WHERE job_id = %s", (job_id,)).fetchone()
    left_out += int(total[0]) - len(per_prompt) if total else 0
    if not ids:
        why = f"; {unanswered} of them for a non-answer ({kinds})" if unanswered else ""
        raise InputError(
            f"calibration job {job!r} has no finished prompt answered by every model of {route} and scored "
            f"by {chosen!r} ({left_out + unanswered} left out{why}): wait for the job, or run "
            f"`herd score {job}`"
        )
    data = CalibrationData(
        task,
        np.array(ids, dtype=np.int64),
        {m: model_arrays(v) for m, v in plain.items()},
        {m: model_arrays(v) for m, v in refined.items()},
    )
    return Loaded(data, job_id, route, chosen, scorers, left_out, unanswered, kinds)


def _no_answers(conn: psycopg.Connection, job_id: int) -> str:
    """Per model, the kinds of the job's failed answer attempts, e.g. `gemma3: 48 unreachable`."""
    counts: dict[str, dict[str, int]] = {}
    for model, error in conn.execute(
        """SELECT a.model, a.error FROM attempts a JOIN prompts p ON p.id = a.prompt_id
           WHERE p.job_id = %s AND a.stage = 'answer' AND a.status = 'error'""",
        (job_id,),
    ):
        kinds = counts.setdefault(str(model), {})
        kind = non_answer(False, error, None) or ""
        kinds[kind] = kinds.get(kind, 0) + 1
    parts = [f"{m}: " + ", ".join(f"{n} {k}" for k, n in sorted(ks.items())) for m, ks in counts.items()]
    return "; ".join(sorted(parts))


def _parse(row: tuple[Any, ...]) -> _Attempt:
    measures = {
        m: (float(v) if v is not None else np.nan) for m, v in zip(RAW_MEASURES, row[5:9], strict=True)
    }
    score = float(row[9]) if row[9] is not None else None
    ok = row[4] == "ok"
    return _Attempt(
        str(row[2]), int(row[3]), ok, measures, score, float(row[10] or 0), non_answer(ok, row[11], row[12])
    )


def _non_answer(attempts: list[_Attempt], refined: bool) -> str | None:
    """The kind of the first non-answer among the attempts that decide the model's arrays: the
    answer step (plain), and with refinement every critique and refinement too; None if none."""
    deciding = attempts if refined else [a for a in attempts if a.stage == "answer"]
    return next((a.non_answer for a in deciding if a.non_answer is not None), None)


def _plain(attempts: list[_Attempt]) -> tuple[float, float, bool, dict[str, float]] | None:
    answer = next((a for a in attempts if a.stage == "answer"), None)
    if answer is None or (answer.ok and answer.score is None):
        return None
    return (answer.score if answer.ok else np.nan), answer.cost, answer.ok, answer.measures  # type: ignore[return-value]


def _refined(attempts: list[_Attempt]) -> tuple[float, float, bool, dict[str, float]] | None:
    if not any(a.stage == "answer" for a in attempts):
        return None
    ok = all(a.ok for a in attempts)
    cost = sum(a.cost for a in attempts)
    answers = [a for a in attempts if a.ok and a.stage in ("answer", "refine")]
    deciding = max(answers, key=lambda a: (a.round, a.stage == "refine")) if answers else None
    if not ok or deciding is None:
        nan = {m: np.nan for m in RAW_MEASURES}
        return np.nan, cost, False, nan
    if deciding.score is None:
        return None
    return deciding.score, cost, True, deciding.measures


def model_arrays(rows: list[tuple[float, float, bool, dict[str, float]]]) -> ModelArrays:
    return ModelArrays(
        np.array([r[0] for r in rows], dtype=float),
        np.array([r[1] for r in rows], dtype=float),
        np.array([r[2] for r in rows], dtype=bool),
        {m: np.array([r[3][m] for r in rows], dtype=float) for m in RAW_MEASURES},
    )

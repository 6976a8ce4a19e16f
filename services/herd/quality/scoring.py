"""`herd score JOB`: score every answer of a job and store one row per (attempt, scorer).

Answers and refinements are scored, critiques are not (they are not answers). Scores live per attempt,
so quality before and after refinement or escalation is a join away. Attempts stream through a
server-side cursor on one connection while another writes and commits in batches, so a huge job
needs neither memory nor one long write transaction, and an interrupted run resumes where it
stopped: what was committed is not scored again unless `rescore` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import psycopg
from rich.console import Console

from herd.herdfile.model import ConfigError, HerdConfig, TaskConfig
from herd.ledger.jobs import job_id
from herd.output import counting_bar
from herd.quality.scorers import SCORERS, Item, Judge, JudgeError, Score, question_for

AUTO = "auto"
CHOICES: tuple[str, ...] = (AUTO, *SCORERS)
ANSWER_STAGES = ("answer", "refine")

_COUNT = """SELECT count(*) FROM attempts a JOIN prompts p ON p.id = a.prompt_id
            WHERE p.job_id = %s AND a.status = 'ok' AND a.stage = ANY(%s) AND a.answer IS NOT NULL"""
_ATTEMPTS = """SELECT a.id, a.answer, p.text, p.reference,
                      ARRAY(SELECT s.scorer FROM scores s WHERE s.attempt_id = a.id)
               FROM attempts a JOIN prompts p ON p.id = a.prompt_id
               WHERE p.job_id = %s AND a.status = 'ok' AND a.stage = ANY(%s) AND a.answer IS NOT NULL
               ORDER BY a.id"""
_UPSERT = """INSERT INTO scores (attempt_id, scorer, score, raw, judge_model) VALUES (%s, %s, %s, %s, %s)
             ON CONFLICT (attempt_id, scorer) DO UPDATE SET score = EXCLUDED.score, raw = EXCLUDED.raw,
                 judge_model = EXCLUDED.judge_model, created_at = now()"""
_MEANS = """SELECT s.scorer, a.model, a.stage, count(*), avg(s.score)
            FROM scores s JOIN attempts a ON a.id = s.attempt_id JOIN prompts p ON p.id = a.prompt_id
            WHERE p.job_id = %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""


@dataclass(frozen=True)
class MeanScore:
    scorer: str
    model: str
    stage: str
    count: int
    mean: float


@dataclass
class ScoreSummary:
    job: str
    attempts: int = 0  # answers read (answer and refine stages, successful)
    scored: dict[str, int] = field(default_factory=dict)  # rows written in this run, per scorer
    already: int = 0  # answers that had every score they needed (no rescore)
    skipped: int = 0  # answers no chosen scorer could score (no reference, no judge)
    failures: int = 0  # judge calls that gave no rating
    failure_examples: list[str] = field(default_factory=list)
    means: list[MeanScore] = field(default_factory=list)  # the job's stored scores, after this run


def plan(task: TaskConfig, reference: str | None, scorer: str, has_judge: bool) -> tuple[str, ...]:
    """The scorers one answer needs. `auto`: labels for classification, token overlap against a
    reference (with exact match), else the judge when one is given; summaries prefer the judge."""
    if scorer != AUTO:
        return (scorer,)
    if reference is None:
        return ("judge",) if has_judge else ()
    if task.kind == "classify":
        return ("label",)
    if task.kind == "summarize" and has_judge:
        return ("judge",)
    return ("f1", "exact")


def check_scorer(scorer: str) -> None:
    if scorer not in CHOICES:
        raise ConfigError(f"unknown scorer {scorer!r}; choose one of: {', '.join(CHOICES)}")


def make_judge(herd: HerdConfig, name: str | None, scorer: str) -> Judge | None:
    """The judge `name` names, checked against the herd file and the scorer choice."""
    check_scorer(scorer)
    if name is None:
        if scorer == "judge":
            raise ConfigError("--scorer judge needs --judge MODEL, a model of the herd file")
        return None
    if scorer not in (AUTO, "judge"):
        raise ConfigError(f"--judge applies to --scorer judge or auto, not {scorer!r}")
    if name not in herd.models:
        raise ConfigError(f"unknown judge model {name!r}; the herd file defines: {', '.join(herd.models)}")
    return Judge(name, herd.models[name])


class _Writer:
    """Buffers score rows and commits them in batches on the writing connection (main thread only)."""

    def __init__(self, conn: psycopg.Connection, summary: ScoreSummary, batch_size: int) -> None:
        self.conn, self.summary, self.batch_size = conn, summary, batch_size
        self.rows: list[tuple[int, str, float, str, str | None]] = []

    def add(self, attempt_id: int, scorer: str, score: Score) -> None:
        self.rows.append((attempt_id, scorer, score.score, score.raw, score.judge_model))
        self.summary.scored[scorer] = self.summary.scored.get(scorer, 0) + 1
        if len(self.rows) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            with self.conn.cursor() as cur:
                cur.executemany(_UPSERT, self.rows)
            self.conn.commit()
            self.rows.clear()


def score_job(
    url: str,
    herd: HerdConfig,
    job: str,
    *,
    scorer: str = AUTO,
    judge_model: str | None = None,
    rescore: bool = False,
    batch_size: int = 200,
    on_total: Callable[[int], None] = lambda n: None,
    advance: Callable[[int], None] = lambda n: None,
    judge: Judge | None = None,
) -> ScoreSummary:
    """Score the answers of `job`; `judge` replaces the one `judge_model` names (tests)."""
    check_scorer(scorer)
    if judge is None:
        judge = make_judge(herd, judge_model, scorer)
    summary = ScoreSummary(job)
    with psycopg.connect(url) as read, psycopg.connect(url) as write:
        jid, task_name = job_id(read, job)
        if task_name not in herd.tasks:
            raise ConfigError(f"job {job!r} ran task {task_name!r}, which the herd file no longer defines")
        task = herd.tasks[task_name]
        stages = list(ANSWER_STAGES)
        total = read.execute(_COUNT, (jid, stages)).fetchone()
        on_total(int(total[0]) if total else 0)
        writer = _Writer(write, summary, batch_size)
        # Judge calls overlap up to the judge's max_in_flight; a few more wait queued, no more, so
        # the cursor never runs far ahead of the judge.
        workers = judge.max_in_flight if judge else 1
        pending: dict[Future[Score | None], int] = {}

        def settle(done: set[Future[Score | None]]) -> None:
            for future in done:
                attempt_id = pending.pop(future)
                try:
                    result = future.result()
                except JudgeError as exc:
                    summary.failures += 1
                    if len(summary.failure_examples) < 3:
                        summary.failure_examples.append(str(exc))
                else:
                    if result is not None:
                        writer.add(attempt_id, "judge", result)
                advance(1)

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="herd-judge")
        try:
            with read.cursor(name="herd_score_attempts") as cur:
                cur.itersize = batch_size
                cur.execute(_ATTEMPTS, (jid, stages))
                for attempt_id, answer, text, reference, existing in cur:
                    summary.attempts += 1
                    item = Item(task, question_for(task, text), answer, reference)
                    names = plan(task, reference, scorer, judge is not None)
                    todo = [n for n in names if rescore or n not in existing]
                    if names and not todo:
                        summary.already += 1
                    elif not _score_inline(item, attempt_id, todo, judge, writer):
                        summary.skipped += 1
                    if judge is not None and "judge" in todo:
                        if len(pending) >= 2 * workers:
                            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                            settle(finished)
                        pending[pool.submit(SCORERS["judge"].score, item, judge)] = attempt_id
                    else:
                        advance(1)
            settle(wait(pending).done)
            writer.flush()
        finally:
            # On an interrupt, queued judge calls are dropped; committed batches stay, a re-run resumes.
            pool.shutdown(wait=True, cancel_futures=True)
        summary.means = [MeanScore(*row) for row in write.execute(_MEANS, (jid,)).fetchall()]
    return summary


def _score_inline(item: Item, attempt_id: int, todo: list[str], judge: Judge | None, writer: _Writer) -> bool:
    """Run the scorers that need no model; False when nothing (judge included) can score the item."""
    scorable = False
    for name in todo:
        if name == "judge":
            scorable = scorable or judge is not None
            continue
        result = SCORERS[name].score(item)
        if result is not None:
            writer.add(attempt_id, name, result)
            scorable = True
    return scorable


def score_with_progress(
    console: Console,
    url: str,
    herd: HerdConfig,
    job: str,
    *,
    scorer: str = AUTO,
    judge_model: str | None = None,
    rescore: bool = False,
) -> ScoreSummary:
    """score_job with a progress bar on `console` (transient: only the summary stays on screen)."""
    judge = make_judge(herd, judge_model, scorer)  # a bad choice fails before the bar appears
    with counting_bar(console, "scoring", "answers") as bar:
        task_id = bar.add_task("score", total=None)
        return score_job(
            url,
            herd,
            job,
            scorer=scorer,
            rescore=rescore,
            judge=judge,
            on_total=lambda n: bar.update(task_id, total=n),
            advance=lambda n: bar.advance(task_id, n),
        )

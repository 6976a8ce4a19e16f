"""Job budgets: spend a job's `--budget-usd` on the least confident answers of the whole job.

Design (docs/policy.md, "Job budgets"):

1. Every prompt gets its entry model's answer. When the policy would escalate an answer of a budget
   job, the pipeline parks the prompt as `held` with its confidence (`prompts.held_confidence`: the
   policy's measure oriented so that lower means less likely correct; calibrated P(correct) when the
   policy uses `p_correct`) instead of sending it on.
2. Once every prompt of the job has its first answers (nothing `pending` or `queued` but released
   escalations), `release` runs under a per-job advisory lock, after a step of the job that leaves
   nothing in flight and on every pump tick: it reconciles the reservations of escalations whose
   work is over (their actual cost is in `attempt_costs` now), then herd.policy.release.plan_release
   takes candidates least confident first, each with an estimate from its own prompt tokens, while
   the job's actual cost plus its reservations is below the budget. Taken candidates go back to
   `pending` at their next model with their estimate in `prompts.reserved_usd` (migration 0013),
   written in the same transaction: concurrent workers see each other's reservations, never the
   same room twice.
3. When the budget is used up and nothing is in flight, the remaining candidates keep their current
   answer as final with `prompts.note = 'budget'` (the export says so).

So the job's attributed cost exceeds the budget by at most one escalation, plus what escalations in
flight with it cost beyond their estimates (herd/policy/release.py says when that is nothing).
Entry answers are not capped: every prompt needs one. A budget below their cost means no escalation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import psycopg

from herd.herdfile.references import StaleReference
from herd.ledger import steps as ledger
from herd.policy.release import Measured, plan_release
from herd.vocabulary import Dispatch

log = logging.getLogger(__name__)

_LOCK = 7468280  # first key of pg_advisory_xact_lock(int, int); the second is the job id

# Prompts of the job still on their way to a first answer: while any exists, the release waits, so
# it judges the whole job's candidates (released escalations carry a reservation and do not count).
_UNANSWERED = "state IN ('pending', 'queued') AND reserved_usd IS NULL"


def idle_budget_jobs(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """(job id, task) of every job holding candidates whose prompts all have their first answers."""
    rows = conn.execute(
        f"""SELECT j.id, j.task FROM jobs j
            WHERE j.budget_usd IS NOT NULL
              AND EXISTS (SELECT FROM prompts p WHERE p.job_id = j.id AND p.state = 'held')
              AND NOT EXISTS (SELECT FROM prompts p WHERE p.job_id = j.id AND p.{_UNANSWERED})"""
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def spent_usd(conn: psycopg.Connection, job_id: int) -> Decimal:
    """The job's attributed cost so far, USD (view attempt_costs)."""
    row = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0) FROM attempt_costs WHERE job_id = %s", (job_id,)
    ).fetchone()
    return Decimal(row[0]) if row else Decimal(0)


def release(
    conn: psycopg.Connection,
    job_id: int,
    next_of: Callable[[str], str | StaleReference | None],
    window: int,
    *,
    unless_in_flight: bool = False,
) -> list[Dispatch]:
    """Release held candidates of a budget job (see the module docstring); returns the dispatches to
    publish after the caller commits. A no-op while a prompt of the job awaits its first answers.

    `next_of(model)`: the model a held answer of `model` escalates to (None: none; a StaleReference:
    it cannot, and the candidate fails with that reason). `unless_in_flight`: also a no-op while an
    escalation of the job is in flight (a step's call: reading the job's costs takes seconds per 100k
    attempts, too much after every escalation; the pump releases into the room meanwhile, once per
    tick). Runs inside the caller's transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK, job_id))
    # Reconcile: an escalation whose work on its model is over has its actual cost in attempt_costs.
    conn.execute(
        """UPDATE prompts SET reserved_usd = NULL WHERE job_id = %s AND reserved_usd IS NOT NULL
           AND state NOT IN ('pending', 'queued')""",
        (job_id,),
    )
    waiting = f"{_UNANSWERED} OR reserved_usd IS NOT NULL" if unless_in_flight else _UNANSWERED
    busy = conn.execute(f"SELECT EXISTS (SELECT FROM prompts WHERE job_id = %s AND ({waiting}))", (job_id,))
    row = busy.fetchone()
    if row is None or row[0]:
        return []
    held = conn.execute(
        f"""SELECT p.id, p.model, p.held_confidence, {_SIZE} FROM prompts p
            WHERE p.job_id = %s AND p.state = 'held' ORDER BY p.id""",
        (job_id,),
    ).fetchall()
    if not held:
        return []
    nexts = [next_of(str(r[1])) for r in held]
    # A candidate whose next model is gone from the herd file fails with that reason: releasing it
    # would send it to a queue no worker reads (herd/herdfile/references.py).
    for r, target in zip(held, nexts, strict=True):
        if isinstance(target, StaleReference):
            log.warning("prompt %s failed: cannot escalate: %s", r[0], target)
            ledger.fail(conn, int(r[0]), f"{r[1]} answer: cannot escalate: {target}")
    # A missing confidence (should not happen: a missing value never escalates) goes last.
    conf = np.array([np.inf if r[2] is None else float(r[2]) for r in held])
    order = [int(i) for i in np.lexsort((np.array([int(r[0]) for r in held]), conf))]
    # Candidates whose model has no next model any more (a policy change) keep their answer.
    kept_anyway = [int(held[i][0]) for i in order if nexts[i] is None]
    order = [i for i in order if isinstance(nexts[i], str)]
    budget_row = conn.execute("SELECT budget_usd FROM jobs WHERE id = %s", (job_id,)).fetchone()
    budget = float(budget_row[0]) if budget_row and budget_row[0] is not None else float("inf")
    measured, reserved = _measured(conn, job_id)
    plan = plan_release(
        [str(nexts[i]) for i in order],
        [None if held[i][3] is None else float(held[i][3]) for i in order],
        measured,
        budget,
        float(spent_usd(conn, job_id)),
        reserved,
    )
    for k, cost in plan.take:
        i = order[k]
        conn.execute(
            """UPDATE prompts SET state = 'pending', model = %s, stage = 'answer', round = 0,
                                  held_confidence = NULL, reserved_usd = %s
               WHERE id = %s AND state = 'held'""",
            (nexts[i], Decimal(repr(cost)), int(held[i][0])),
        )
    _keep_for_budget(conn, kept_anyway + [int(held[order[k]][0]) for k in plan.keep])
    # Released candidates are pending again: they enter the window by the same locked top-up as any.
    return ledger.top_up(conn, window)


# A prompt's size for the estimate: the prompt tokens of its first answer (its entry model's count),
# the same measure for the candidates and for the escalations already measured.
_SIZE = """(SELECT a.prompt_tokens FROM attempts a WHERE a.prompt_id = p.id AND a.stage = 'answer'
            AND a.prompt_tokens IS NOT NULL ORDER BY a.id LIMIT 1)"""


def _measured(conn: psycopg.Connection, job_id: int) -> tuple[dict[str, Measured], float]:
    """Per model: (size, cost) of each prompt of the job whose work on it is over, and the escalations
    released to it still in flight; and the sum of their reservations, USD."""
    sizes: dict[str, list[float]] = {}
    costs: dict[str, list[float]] = {}
    for model, size, cost in conn.execute(
        f"""SELECT c.model, {_SIZE}, sum(c.cost_usd) FROM attempt_costs c JOIN prompts p ON p.id = c.prompt_id
            WHERE c.job_id = %s AND c.busy_start IS NOT NULL
              AND NOT (p.state IN ('pending', 'queued') AND p.model = c.model)
            GROUP BY c.model, p.id""",
        (job_id,),
    ).fetchall():
        sizes.setdefault(str(model), []).append(float(size) if size is not None else 0.0)
        costs.setdefault(str(model), []).append(float(cost or 0))
    flying = {
        str(r[0]): (int(r[1]), float(r[2]))
        for r in conn.execute(
            """SELECT model, count(*), sum(reserved_usd) FROM prompts
               WHERE job_id = %s AND reserved_usd IS NOT NULL GROUP BY model""",
            (job_id,),
        ).fetchall()
    }
    measured = {
        model: Measured(
            np.array(sizes.get(model, []), dtype=float),
            np.array(costs.get(model, []), dtype=float),
            flying.get(model, (0, 0.0))[0],
        )
        for model in set(costs) | set(flying)
    }
    return measured, sum(r for _, r in flying.values())


def _keep_for_budget(conn: psycopg.Connection, prompt_ids: list[int]) -> None:
    """Keep each held prompt's current answer (its model's latest) as final, noted 'budget'. The
    attempt's `escalated` flag is cleared: the prompt did not go to the next model."""
    if not prompt_ids:
        return
    conn.execute(
        """WITH kept AS (
               SELECT DISTINCT ON (p.id) p.id AS prompt_id, a.id AS attempt_id, a.model, a.answer
               FROM prompts p
               JOIN attempts a ON a.prompt_id = p.id AND a.model = p.model
                    AND a.stage IN ('answer', 'refine') AND a.status = 'ok'
               WHERE p.id = ANY(%s) AND p.state = 'held'
               ORDER BY p.id, a.round DESC),
           final AS (
               INSERT INTO finals (prompt_id, attempt_id, model, answer)
               SELECT prompt_id, attempt_id, model, coalesce(answer, '') FROM kept
               ON CONFLICT (prompt_id) DO NOTHING),
           unescalated AS (
               UPDATE attempts SET escalated = false WHERE id IN (SELECT attempt_id FROM kept))
           UPDATE prompts SET state = 'done', finished_at = now(), note = 'budget', held_confidence = NULL
           WHERE id IN (SELECT prompt_id FROM kept)""",
        (prompt_ids,),
    )

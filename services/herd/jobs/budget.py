"""Job budgets: spend a job's `--budget-usd` on the least confident answers of the whole job.

Design (docs/policy.md, "Job budgets"):

1. Every prompt gets its entry model's answer. When the policy would escalate an answer of a budget
   job, the pipeline parks the prompt as `held` with its confidence (`prompts.held_confidence`: the
   policy's measure oriented so that lower means less likely correct; calibrated P(correct) when the
   policy uses `p_correct`) instead of sending it on.
2. When the job has nothing `pending` or `queued` left (judged against the whole job, not first come
   first served), `release` runs under a per-job advisory lock: spent = the job's attributed cost so
   far (view `attempt_costs`); each candidate's escalation cost is estimated as the most any prompt
   of this job has cost on the next model so far (an upper estimate, so the cap holds); then
   herd.policy.budget.allocate takes candidates in ascending confidence while spent + reserved is
   below the budget. Taken candidates go back to `pending` at their next model; the rest keep their
   current answer as final with `prompts.note = 'budget'` (the export says so).
3. When a candidate's next model has no cost in this job yet, the release stops at it: that one
   candidate goes alone, as a probe, and the others stay held until the job is idle again.

So the job's attributed cost exceeds the budget by at most one escalation (the last one taken),
provided an escalation costs no more than the most expensive one seen so far on that model (the
probe's cost is the one unbounded case, and it is a single escalation).

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
from herd.ledger.steps import Dispatch
from herd.policy.budget import allocate

log = logging.getLogger(__name__)

_LOCK = 7468280  # first key of pg_advisory_xact_lock(int, int); the second is the job id


def idle_budget_jobs(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """(job id, task) of every job holding candidates with nothing pending or queued."""
    rows = conn.execute(
        """SELECT j.id, j.task FROM jobs j
           WHERE j.budget_usd IS NOT NULL
             AND EXISTS (SELECT FROM prompts p WHERE p.job_id = j.id AND p.state = 'held')
             AND NOT EXISTS (SELECT FROM prompts p WHERE p.job_id = j.id
                             AND p.state IN ('pending', 'queued'))"""
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def spent_usd(conn: psycopg.Connection, job_id: int) -> Decimal:
    """The job's attributed cost so far, USD (view attempt_costs)."""
    row = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0) FROM attempt_costs WHERE job_id = %s", (job_id,)
    ).fetchone()
    return Decimal(row[0]) if row else Decimal(0)


def release(
    conn: psycopg.Connection, job_id: int, next_of: Callable[[str], str | StaleReference | None], window: int
) -> list[Dispatch]:
    """Release the held candidates of an idle budget job (see the module docstring); returns the
    dispatches to publish after the caller commits. A no-op while any prompt of the job is in flight.

    `next_of(model)`: the model a held answer of `model` escalates to (None: none; a StaleReference:
    it cannot, and the candidate fails with that reason). Runs inside the caller's
    transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK, job_id))
    busy = conn.execute(
        "SELECT EXISTS (SELECT FROM prompts WHERE job_id = %s AND state IN ('pending', 'queued'))", (job_id,)
    ).fetchone()
    if busy is None or busy[0]:
        return []
    held = conn.execute(
        "SELECT id, model, held_confidence FROM prompts WHERE job_id = %s AND state = 'held' ORDER BY id",
        (job_id,),
    ).fetchall()
    if not held:
        return []
    budget_row = conn.execute("SELECT budget_usd FROM jobs WHERE id = %s", (job_id,)).fetchone()
    budget = float(budget_row[0]) if budget_row and budget_row[0] is not None else float("inf")
    remaining = budget - float(spent_usd(conn, job_id))
    estimates = _max_prompt_cost(conn, job_id)
    ids = np.array([int(r[0]) for r in held], dtype=np.int64)
    nexts = [next_of(str(r[1])) for r in held]
    # A candidate whose next model is gone from the herd file fails with that reason: releasing it
    # would send it to a queue no worker reads (herd/herdfile/references.py).
    for r, target in zip(held, nexts, strict=True):
        if isinstance(target, StaleReference):
            log.warning("prompt %s failed: cannot escalate: %s", r[0], target)
            ledger.fail(conn, int(r[0]), f"{r[1]} answer: cannot escalate: {target}")
    targets = [None if isinstance(t, StaleReference) else t for t in nexts]
    # A missing confidence (should not happen: a missing value never escalates) goes last.
    conf = np.array([np.inf if r[2] is None else float(r[2]) for r in held])
    order = np.lexsort((ids, conf))
    # Candidates whose model has no next model any more (a policy change) keep their answer.
    kept_anyway = [int(ids[i]) for i in order if nexts[i] is None]
    order = np.array([i for i in order if targets[i] is not None], dtype=np.int64)
    first_unknown = next((k for k, i in enumerate(order) if estimates.get(str(targets[i])) is None), None)
    prefix = order[: len(order) if first_unknown is None else first_unknown]
    cost = np.array([estimates[str(targets[i])] for i in prefix], dtype=float)
    taken = list(prefix[allocate(ids[prefix], conf[prefix], cost, max(remaining, 0.0)).escalate])
    reserved = float(cost[: len(taken)].sum())
    ran_out = len(taken) < len(prefix) or reserved >= remaining
    if first_unknown is not None and not ran_out:
        taken.append(order[first_unknown])  # a probe: the next model's cost in this job is unknown
    for i in taken:
        conn.execute(
            """UPDATE prompts SET state = 'pending', model = %s, stage = 'answer', round = 0,
                                  held_confidence = NULL
               WHERE id = %s AND state = 'held'""",
            (targets[i], int(ids[i])),
        )
    chosen = set(taken)
    keep = kept_anyway + ([int(ids[i]) for i in order if i not in chosen] if ran_out else [])
    _keep_for_budget(conn, keep)
    # Released candidates are pending again: they enter the window by the same locked top-up as any.
    return ledger.top_up(conn, window)


def _max_prompt_cost(conn: psycopg.Connection, job_id: int) -> dict[str, float]:
    """Per model, the most one prompt of the job has cost on it (all its steps), USD."""
    rows = conn.execute(
        """SELECT model, max(cost) FROM (
               SELECT prompt_id, model, sum(cost_usd) AS cost FROM attempt_costs
               WHERE job_id = %s AND busy_start IS NOT NULL GROUP BY prompt_id, model) per_prompt
           GROUP BY model""",
        (job_id,),
    ).fetchall()
    return {str(r[0]): float(r[1]) for r in rows if r[1] is not None}


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

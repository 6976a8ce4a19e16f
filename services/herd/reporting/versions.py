"""Two honest additions to `herd report`: per policy version, and each model alone.

- `by_version`: the job's final answers grouped by the policy version that decided them (view
  `policy_version_quality`, migration 0005; version None = the herd file), so a job that ran under
  two versions, or across a rollback, shows each version's quality and cost on its own prompts.
- `alone`: a later-tier model's row in a cascade job is its quality on the prompts escalated to it
  (the hard ones), which a reader takes for the model's quality. When a calibration job exists for
  the task, every model answered every prompt there: `alone` gives each model's quality and
  attributed cost per 1k prompts on those same prompts (the answer step, refinement off). A prompt
  on which some model gave no answer (an error, a timeout, an empty or cut-off answer:
  herd.ledger.outcomes) is left out for every model, never scored as a wrong answer, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg


@dataclass(frozen=True)
class VersionRow:
    version: int | None  # None: decided by the herd file
    prompts: int
    kept_for_budget: int
    quality: float | None
    cost_usd: Decimal
    cost_per_1k_prompts_usd: Decimal


@dataclass(frozen=True)
class AloneRow:
    model: str
    prompts: int
    quality: float | None
    cost_per_1k_prompts_usd: Decimal
    no_answer: int = 0  # prompts on which this model gave no answer (left out for every model)


@dataclass(frozen=True)
class Alone:
    job: str  # the calibration job
    prompts: int  # prompts every model answered: the rows' figures are on these
    rows: list[AloneRow]
    unanswered: int = 0  # prompts left out because some model gave no answer


def by_version(conn: psycopg.Connection, job: str, scorer: str | None) -> list[VersionRow]:
    """Per policy version of `job`: prompts, answers kept for budget, quality under `scorer` (None
    when unscored), attributed cost. Unscored prompts count in the cost, not in the quality."""
    rows = conn.execute(
        """SELECT policy_version, sum(prompts), sum(kept_for_budget),
                  sum(quality * prompts) FILTER (WHERE scorer = %s::text)
                      / nullif(sum(prompts) FILTER (WHERE scorer = %s::text), 0),
                  sum(cost_usd)
           FROM policy_version_quality
           WHERE job = %s AND (scorer = %s OR scorer IS NULL OR %s::text IS NULL)
           GROUP BY policy_version ORDER BY policy_version NULLS FIRST""",
        (scorer, scorer, job, scorer, scorer),
    ).fetchall()
    return [
        VersionRow(
            r[0],
            int(r[1]),
            int(r[2]),
            float(r[3]) if r[3] is not None else None,
            Decimal(r[4]),
            Decimal(1000) * Decimal(r[4]) / int(r[1]) if r[1] else Decimal(0),
        )
        for r in rows
    ]


def alone(conn: psycopg.Connection, task: str, scorer: str | None) -> Alone | None:
    """Each model alone on the latest calibration job of `task` scored by `scorer`; None if none."""
    if scorer is None:
        return None
    found = conn.execute(
        """SELECT j.id, j.name, count(DISTINCT p.id) FROM jobs j JOIN prompts p ON p.job_id = j.id
           WHERE j.task = %s AND j.kind = 'calibration' AND p.state IN ('done', 'failed')
             AND EXISTS (SELECT FROM scores s JOIN attempts a ON a.id = s.attempt_id
                         WHERE a.prompt_id = p.id AND s.scorer = %s)
           GROUP BY j.id, j.name ORDER BY j.id DESC LIMIT 1""",
        (task, scorer),
    ).fetchone()
    if found is None:
        return None
    rows = conn.execute(
        """WITH answers AS (
               SELECT c.prompt_id, c.model, c.attempt_id, c.cost_usd, s.score,
                      c.status <> 'ok' OR a.finish_reason IS NOT DISTINCT FROM 'length' AS no_answer
               FROM attempt_costs c JOIN attempts a ON a.id = c.attempt_id
               JOIN prompts p ON p.id = c.prompt_id
               LEFT JOIN scores s ON s.attempt_id = c.attempt_id AND s.scorer = %(scorer)s
               WHERE c.job_id = %(job)s AND c.stage = 'answer' AND p.state IN ('done', 'failed')
                 -- Redundant with the job, but the job's attempts are then read by a range of their
                 -- prompt_id index, not found in a scan of the whole ledger (migration 0010's SPAN).
                 AND c.prompt_id BETWEEN (SELECT min(id) FROM prompts WHERE job_id = %(job)s)
                                     AND (SELECT max(id) FROM prompts WHERE job_id = %(job)s)
           ), answered AS (
               SELECT *, bool_or(no_answer) OVER (PARTITION BY prompt_id) AS left_out FROM answers
           )
           SELECT model, count(*) FILTER (WHERE NOT left_out),
                  avg(score) FILTER (WHERE NOT left_out),
                  1000 * coalesce(sum(cost_usd) FILTER (WHERE NOT left_out), 0)
                      / greatest(count(*) FILTER (WHERE NOT left_out), 1),
                  count(*) FILTER (WHERE no_answer),
                  (SELECT count(DISTINCT prompt_id) FROM answered WHERE left_out)
           FROM answered GROUP BY model ORDER BY min(attempt_id)""",
        {"scorer": scorer, "job": found[0]},
    ).fetchall()
    unanswered = int(rows[0][5]) if rows else 0
    return Alone(
        str(found[1]),
        max((int(r[1]) for r in rows), default=int(found[2])),
        [
            AloneRow(str(r[0]), int(r[1]), None if r[2] is None else float(r[2]), Decimal(r[3]), int(r[4]))
            for r in rows
        ],
        unanswered,
    )


def lines(versions: list[VersionRow], alone_: Alone | None, money: object) -> list[str]:
    """Plain lines for the table report; `money` formats a Decimal (report.money)."""
    fmt = money if callable(money) else str
    out: list[str] = []
    if versions and any(v.version is not None for v in versions):
        out.append("by policy version (the version that decided each prompt):")
        for v in versions:
            name = f"version {v.version}" if v.version is not None else "herd file"
            quality = f"{v.quality:.3f}" if v.quality is not None else "-"
            budget = f", {v.kept_for_budget} kept for budget" if v.kept_for_budget else ""
            out.append(
                f"  {name}: {v.prompts} prompts{budget}, quality {quality}, "
                f"{fmt(v.cost_per_1k_prompts_usd)} USD per 1k prompts"
            )
    if alone_ is not None:
        out.append(
            f"each model alone on calibration job {alone_.job} ({alone_.prompts} prompts, every model):"
        )
        for r in alone_.rows:
            quality = f"{r.quality:.3f}" if r.quality is not None else "-"
            out.append(f"  {r.model}: quality {quality}, {fmt(r.cost_per_1k_prompts_usd)} USD per 1k prompts")
        if alone_.unanswered:
            counts = ", ".join(f"{r.model} {r.no_answer}" for r in alone_.rows if r.no_answer)
            out.append(
                f"  ({alone_.unanswered} more prompts left out: a model gave no answer there ({counts}); "
                "an error or cut-off answer is not a wrong answer)"
            )
    return out

"""perfics_inputs for routed jobs: each prompt's own entry model, not the job's.

A live job submitted with an active router (0008) enters each prompt at the model the router chose;
`jobs.entry_model` is then only the herd file's (or policy's) default entry. 0010's
`cost_job_perfics` still took that default as every prompt's entry: the `<entry>-only` row read the
default model's answers (only the prompts routed to it, or escalated to it, have one) at that model's
whole cost, and the cascade's `quality_base` read the same. A router sending 30 of 40 prompts to
`large` gave a `small-only` row of 40 prompts scoring what small scored on its 10.

This revision replaces `cost_job_perfics` (same signature, same columns: `perfics_inputs` is
unchanged). Per prompt, the entry model is the job's `entry_model` when no router chose it
(`prompts.router_version` NULL: every figure is as before, by the same expressions), else the model of
the prompt's first attempt: a prompt enters at the model the router chose, and escalation only comes
after that model's answer. For a job with any routed prompt:

- the counterfactual row is named `routed entry` (ROUTED_ENTRY): each prompt's first answer and last
  good answer from its own entry model, at the cost of those models' attempts on those prompts
  (refinements included), from `attempt_costs`;
- the cascade's `quality_base` is each prompt's entry model's first answer.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The span of one job's prompt ids, as a condition on a prompt id column: redundant with the join on
# prompts.job_id, but it lets the planner read that job's attempts by a range of the
# (prompt_id, ...) index instead of scanning the whole table (ids of a job's prompts are nearly
# contiguous: a job submits its prompts together). ix_prompts_job_id_id makes both ends O(log n).
SPAN = (
    "{col} BETWEEN (SELECT min(id) FROM prompts WHERE job_id = {job}) "
    "AND (SELECT max(id) FROM prompts WHERE job_id = {job})"
)


def span(col: str, job: str) -> str:
    """SPAN for prompt id column `col` and the SQL expression `job` giving the job's id."""
    return SPAN.format(col=col, job=job)


# The counterfactual row's policy name in a routed job (herd/reporting/build.py reads it).
ROUTED_ENTRY = "routed entry"

# Per (prompt, model) row of `pm`: the answer the prompt's entry model gave. A routed prompt's entry
# is the model with the earliest attempt (first_id); an unrouted prompt's is the job's ($2), exactly
# as 0010 chose it.
_ENTRY_PICK = """CASE WHEN bool_or(routed) THEN (array_agg({col} ORDER BY first_id))[1]
                        ELSE max({col}) FILTER (WHERE model = $2) END"""

JOB_PERFICS = f"""
CREATE OR REPLACE FUNCTION cost_job_perfics(job_id bigint, entry_model text) RETURNS TABLE (
    policy text, kind text, scorer text, prompts bigint, quality_base double precision,
    quality_refined double precision, refinement_rounds numeric, cost_usd numeric,
    cost_per_1k_prompts_usd numeric, gpu_hours numeric)
LANGUAGE sql STABLE SET jit = off AS $$
        WITH job AS (
            SELECT EXISTS (
                SELECT FROM prompts p WHERE p.job_id = $1 AND p.router_version IS NOT NULL
            ) AS routed
        ),
        model_sums AS (
            SELECT r.model, r.cost_usd, r.attributed_gpu_seconds, r.refinements
            FROM cost_rollups r
            WHERE r.job_id = $1
            UNION ALL
            SELECT c.model, sum(c.cost_usd), sum(c.attributed_gpu_seconds),
                   count(*) FILTER (WHERE c.stage = 'refine')
            FROM attempt_costs c
            WHERE c.job_id = $1 AND {span("c.prompt_id", "$1")}
              AND NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = $1)
            GROUP BY c.model
        ),
        -- Each routed prompt's entry model's attempts: the model of the prompt's first attempt (a
        -- window over the job's attempts, not a join of two derived sets). Read only for a routed job.
        entry_costs AS (
            SELECT sum(x.cost_usd) AS cost_usd, sum(x.attributed_gpu_seconds) / 3600 AS gpu_hours,
                   count(*) FILTER (WHERE x.stage = 'refine') AS refinements
            FROM (
                SELECT c.cost_usd, c.attributed_gpu_seconds, c.stage, c.model,
                       CASE WHEN p.router_version IS NULL THEN $2
                            ELSE first_value(c.model) OVER (PARTITION BY c.prompt_id ORDER BY c.attempt_id)
                       END AS entry
                FROM attempt_costs c
                JOIN prompts p ON p.id = c.prompt_id
                WHERE c.job_id = $1 AND {span("c.prompt_id", "$1")} AND (SELECT routed FROM job)
            ) x
            WHERE x.model = x.entry
        ),
        pm AS (
            SELECT p.id AS prompt_id,
                   a.model,
                   p.router_version IS NOT NULL AS routed,
                   min(a.id) AS first_id,
                   (array_agg(a.id ORDER BY a.round, a.id) FILTER (WHERE a.stage = 'answer'))[1] AS base_id,
                   (array_agg(a.id ORDER BY a.stage = 'refine' DESC, a.round DESC, a.id DESC)
                       FILTER (WHERE a.stage IN ('answer', 'refine') AND a.status = 'ok'))[1] AS refined_id,
                   max(fin.attempt_id) AS final_id
            FROM prompts p
            LEFT JOIN attempts a ON a.prompt_id = p.id AND {span("a.prompt_id", "$1")}
            LEFT JOIN finals fin ON fin.prompt_id = p.id AND {span("fin.prompt_id", "$1")}
            WHERE p.job_id = $1
            GROUP BY p.id, a.model
        ),
        policy_prompts AS (
            SELECT model AS policy, 'model' AS kind, prompt_id, base_id, refined_id
            FROM pm
            WHERE base_id IS NOT NULL
            UNION ALL
            SELECT 'cascade', 'cascade', prompt_id, {_ENTRY_PICK.format(col="base_id")}, max(final_id)
            FROM pm
            GROUP BY prompt_id
            UNION ALL
            SELECT CASE WHEN (SELECT routed FROM job) THEN '{ROUTED_ENTRY}' ELSE $2 || '-only' END,
                   'counterfactual', prompt_id,
                   {_ENTRY_PICK.format(col="base_id")},
                   {_ENTRY_PICK.format(col="refined_id")}
            FROM pm
            GROUP BY prompt_id
        ),
        policy_costs AS (
            SELECT model AS policy, 'model' AS kind, cost_usd, attributed_gpu_seconds / 3600 AS gpu_hours,
                   refinements
            FROM model_sums
            UNION ALL
            SELECT 'cascade', 'cascade', sum(cost_usd), sum(attributed_gpu_seconds) / 3600,
                   sum(refinements)::bigint
            FROM model_sums
            HAVING count(*) > 0
            UNION ALL
            SELECT $2 || '-only', 'counterfactual', cost_usd, attributed_gpu_seconds / 3600,
                   refinements
            FROM model_sums
            WHERE model = $2 AND NOT (SELECT routed FROM job)
            UNION ALL
            SELECT '{ROUTED_ENTRY}', 'counterfactual', cost_usd, gpu_hours, refinements
            FROM entry_costs
            WHERE (SELECT routed FROM job)
        ),
        job_scorers AS (
            SELECT DISTINCT s.scorer
            FROM prompts p
            JOIN attempts a ON a.prompt_id = p.id AND {span("a.prompt_id", "$1")}
            JOIN scores s ON s.attempt_id = a.id
            WHERE p.job_id = $1
        ),
        scorers AS (
            SELECT scorer FROM job_scorers
            UNION ALL
            SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM job_scorers)
        ),
        quality AS (
            SELECT pp.policy, pp.kind, sc.scorer,
                   count(*) AS prompts,
                   avg(base.score) AS quality_base,
                   avg(refined.score) AS quality_refined
            FROM policy_prompts pp
            CROSS JOIN scorers sc
            LEFT JOIN scores base ON base.attempt_id = pp.base_id AND base.scorer = sc.scorer
            LEFT JOIN scores refined ON refined.attempt_id = pp.refined_id AND refined.scorer = sc.scorer
            GROUP BY pp.policy, pp.kind, sc.scorer
        )
        SELECT q.policy,
               q.kind,
               q.scorer,
               q.prompts,
               q.quality_base,
               q.quality_refined,
               coalesce(pc.refinements, 0)::numeric / q.prompts AS refinement_rounds,
               coalesce(pc.cost_usd, 0) AS cost_usd,
               1000 * coalesce(pc.cost_usd, 0) / q.prompts AS cost_per_1k_prompts_usd,
               coalesce(pc.gpu_hours, 0) AS gpu_hours
        FROM quality q
        LEFT JOIN policy_costs pc ON pc.policy = q.policy AND pc.kind = q.kind
$$
"""


# 0010's cost_job_perfics, which downgrade() puts back.
PREVIOUS_JOB_PERFICS = f"""
CREATE OR REPLACE FUNCTION cost_job_perfics(job_id bigint, entry_model text) RETURNS TABLE (
    policy text, kind text, scorer text, prompts bigint, quality_base double precision,
    quality_refined double precision, refinement_rounds numeric, cost_usd numeric,
    cost_per_1k_prompts_usd numeric, gpu_hours numeric)
LANGUAGE sql STABLE SET jit = off AS $$
        WITH model_sums AS (
            SELECT r.model, r.cost_usd, r.attributed_gpu_seconds, r.refinements
            FROM cost_rollups r
            WHERE r.job_id = $1
            UNION ALL
            SELECT c.model, sum(c.cost_usd), sum(c.attributed_gpu_seconds),
                   count(*) FILTER (WHERE c.stage = 'refine')
            FROM attempt_costs c
            WHERE c.job_id = $1 AND {span("c.prompt_id", "$1")}
              AND NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = $1)
            GROUP BY c.model
        ),
        pm AS (
            SELECT p.id AS prompt_id,
                   a.model,
                   (array_agg(a.id ORDER BY a.round, a.id) FILTER (WHERE a.stage = 'answer'))[1] AS base_id,
                   (array_agg(a.id ORDER BY a.stage = 'refine' DESC, a.round DESC, a.id DESC)
                       FILTER (WHERE a.stage IN ('answer', 'refine') AND a.status = 'ok'))[1] AS refined_id,
                   max(fin.attempt_id) AS final_id
            FROM prompts p
            LEFT JOIN attempts a ON a.prompt_id = p.id AND {span("a.prompt_id", "$1")}
            LEFT JOIN finals fin ON fin.prompt_id = p.id AND {span("fin.prompt_id", "$1")}
            WHERE p.job_id = $1
            GROUP BY p.id, a.model
        ),
        policy_prompts AS (
            SELECT model AS policy, 'model' AS kind, prompt_id, base_id, refined_id
            FROM pm
            WHERE base_id IS NOT NULL
            UNION ALL
            SELECT 'cascade', 'cascade', prompt_id,
                   max(base_id) FILTER (WHERE model = $2), max(final_id)
            FROM pm
            GROUP BY prompt_id
            UNION ALL
            SELECT $2 || '-only', 'counterfactual', prompt_id,
                   max(base_id) FILTER (WHERE model = $2),
                   max(refined_id) FILTER (WHERE model = $2)
            FROM pm
            GROUP BY prompt_id
        ),
        policy_costs AS (
            SELECT model AS policy, 'model' AS kind, cost_usd, attributed_gpu_seconds / 3600 AS gpu_hours,
                   refinements
            FROM model_sums
            UNION ALL
            SELECT 'cascade', 'cascade', sum(cost_usd), sum(attributed_gpu_seconds) / 3600,
                   sum(refinements)::bigint
            FROM model_sums
            HAVING count(*) > 0
            UNION ALL
            SELECT $2 || '-only', 'counterfactual', cost_usd, attributed_gpu_seconds / 3600,
                   refinements
            FROM model_sums
            WHERE model = $2
        ),
        job_scorers AS (
            SELECT DISTINCT s.scorer
            FROM prompts p
            JOIN attempts a ON a.prompt_id = p.id AND {span("a.prompt_id", "$1")}
            JOIN scores s ON s.attempt_id = a.id
            WHERE p.job_id = $1
        ),
        scorers AS (
            SELECT scorer FROM job_scorers
            UNION ALL
            SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM job_scorers)
        ),
        quality AS (
            SELECT pp.policy, pp.kind, sc.scorer,
                   count(*) AS prompts,
                   avg(base.score) AS quality_base,
                   avg(refined.score) AS quality_refined
            FROM policy_prompts pp
            CROSS JOIN scorers sc
            LEFT JOIN scores base ON base.attempt_id = pp.base_id AND base.scorer = sc.scorer
            LEFT JOIN scores refined ON refined.attempt_id = pp.refined_id AND refined.scorer = sc.scorer
            GROUP BY pp.policy, pp.kind, sc.scorer
        )
        SELECT q.policy,
               q.kind,
               q.scorer,
               q.prompts,
               q.quality_base,
               q.quality_refined,
               coalesce(pc.refinements, 0)::numeric / q.prompts AS refinement_rounds,
               coalesce(pc.cost_usd, 0) AS cost_usd,
               1000 * coalesce(pc.cost_usd, 0) / q.prompts AS cost_per_1k_prompts_usd,
               coalesce(pc.gpu_hours, 0) AS gpu_hours
        FROM quality q
        LEFT JOIN policy_costs pc ON pc.policy = q.policy AND pc.kind = q.kind
$$
"""


def upgrade() -> None:
    op.execute(JOB_PERFICS)


def downgrade() -> None:
    op.execute(PREVIOUS_JOB_PERFICS)

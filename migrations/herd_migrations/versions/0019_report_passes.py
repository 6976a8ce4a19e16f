"""Reports that read a job's attempts once: the prompts' span, scored prompts only, one version's cost.

`herd report` on a running job of 1M attempts took 22 s on an idle 2-core machine (39 s at load 6),
against 0.9 s for a `count(*)` of its attempts: the job's attempts were read eight times. Each
per-job function joined every attempt to its prompt to know it was the job's; `perfics_inputs`
built a row per (prompt, model) and then per policy and scorer (2.3M rows for 666,666 prompts), even
with no score at all to average; `policy_version_quality` costed every finished prompt one by one;
and the open tail's lookup hashed every attempt of the ledger when the planner misjudged the tail.

This revision replaces five functions (same names, same columns and numbers: the views are unchanged):

- **cost_job_span** (new): the job's prompt-id span, and whether it is the job's own (no other job
  has a prompt inside it: an index probe per other job). Then the job's attempts are
  those of the span, read by range without a join; where other prompts interleave (documents' chunks,
  jobs submitted at once), each attempt's prompt is still checked.
- **cost_job_window** and **cost_job_models**: by the span; cost_job_models takes the job's window
  from its own pass instead of a second one. The open tail looks each of its attempts up by key.
- **cost_job_model_sums**: also gives how many prompts each model answered and the span of the job's
  attempt ids, so `cost_job_perfics` needs no pass of its own for a running job.
  It counts answers without a sort, so attempts get `CHECK (round >= 0)` (rounds count a model's
  refinements from 0; Herd never wrote another).
- **cost_job_perfics**: the job's prompts are counted index-only, and whether a router chose any
  is one probe of a new partial index (`ix_prompts_routed`); a model's prompts come from that count;
  only scored prompts (found by the job's attempt-id span in `scores`) are aggregated per (prompt,
  model). An unscored prompt never
  moved an average; it counts in the prompts, as before.
- **cost_job_policy_versions**: when every finished prompt ran under one version (the usual job),
  its cost is the job's (its rollup once sealed, else running totals + open tail, swept once) less
  its unfinished prompts' attempts, and only
  scored prompts are costed one by one; under several versions, every prompt is costed as before.
  Values are equal; a cost's `numeric` scale can differ (the job total's instead of its prompts'),
  and so can its per-1k quotient past the 15th significant digit.

Settings: each function runs with `work_mem = 64MB`, so a million attempts' sort or hash stays in
memory (it spilled to disk at the default 4MB). tests/unit/test_report_passes.py compares the rows
with 0017's functions on seeded ledgers: interleaved jobs, routed prompts, refinements, several
scorers and none, several versions, sealed and live.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# A busy interval exists only for a positive, finite busy_s (0009's rule, restated).
VALID = "{a}.endpoint IS NOT NULL AND {a}.busy_s > 0 AND {a}.busy_s < 'Infinity'"
GPU_S = "{s}.shared_s * {a}.gpu_count"
COST = "{s}.shared_s * {a}.gpu_count * {a}.usd_per_gpu_hour / 3600"

JOB_SPAN = """
CREATE OR REPLACE FUNCTION cost_job_span(job_id bigint) RETURNS TABLE (lo bigint, hi bigint, own boolean)
LANGUAGE sql STABLE SET jit = off AS $$
        -- The span from two index probes; it is the job's own when no other job has a prompt inside
        -- it: one probe per other job, not a read of the span's prompts.
        SELECT j.lo, j.hi,
               NOT EXISTS (
                   SELECT FROM jobs o
                   WHERE o.id <> $1
                     AND EXISTS (SELECT FROM prompts p WHERE p.job_id = o.id AND p.id BETWEEN j.lo AND j.hi)
               ) AS own
        FROM (SELECT (SELECT min(p.id) FROM prompts p WHERE p.job_id = $1) AS lo,
                     (SELECT max(p.id) FROM prompts p WHERE p.job_id = $1) AS hi) j
$$
"""

# Whether attempt `a` is the job's, given the CTE `span` (cost_job_span): by the range of its prompt
# id alone when the span is the job's own, else also by its prompt's job.
OF_JOB = (
    "{a}.prompt_id BETWEEN (SELECT lo FROM span) AND (SELECT hi FROM span) "
    "AND ((SELECT own FROM span) "
    "OR EXISTS (SELECT FROM prompts jp WHERE jp.id = {a}.prompt_id AND jp.job_id = $1))"
)
SPAN_CTE = "span AS MATERIALIZED (SELECT * FROM cost_job_span($1))"
# The sorts and hashes of a job's attempts fit in memory up to a few million rows, instead of
# spilling to disk at the default 4MB.
SETTINGS = "SET jit = off SET work_mem = '64MB'"

JOB_WINDOW = f"""
CREATE OR REPLACE FUNCTION cost_job_window(job_id bigint) RETURNS TABLE (
    window_start timestamp with time zone, window_end timestamp with time zone, window_s numeric)
LANGUAGE sql STABLE {SETTINGS} AS $$
        WITH {SPAN_CTE}
        SELECT min(coalesce(b.busy_start, b.finished_at)) AS window_start,
               max(b.finished_at) AS window_end,
               extract(epoch FROM max(b.finished_at) - min(coalesce(b.busy_start, b.finished_at)))
                   AS window_s
        FROM attempt_busy b
        WHERE {OF_JOB.format(a="b")}
        HAVING count(*) > 0
$$
"""

ZEROS = """                   -- attempt_costs' zero for an attempt without any share, with its scale.
                   min(0::numeric * a.gpu_count) AS zero_gpu_s,
                   min(0::numeric * a.gpu_count * a.usd_per_gpu_hour / 3600) AS zero_cost"""
JOB_ATTEMPTS = f"""            FROM attempts a
            WHERE {OF_JOB.format(a="a")}
            GROUP BY a.model
"""

# An open-tail row `o`'s attempt `a` (its prompt, model, GPUs, price) when it has no stored share,
# looked up by key: OFFSET 0 keeps the planner from hashing every attempt and every share, which it did
# for a tail it guessed far larger than it is.
UNSTORED = """CROSS JOIN LATERAL (
                SELECT t.prompt_id, t.model, t.gpu_count, t.usd_per_gpu_hour
                FROM attempts t
                WHERE t.id = o.attempt_id AND NOT EXISTS (SELECT FROM cost_shares s WHERE s.attempt_id = t.id)
                OFFSET 0
            ) a"""

COSTS = f"""        -- The stored shares, from the running totals: each sum at its terms' largest scale.
        stored AS (
            SELECT t.model,
                   sum(t.shares) AS shares,
                   round(sum(t.gpu_s), max(t.gpu_scale)) AS gpu_s,
                   round(sum(t.cost_usd), max(t.cost_scale)) AS cost_usd
            FROM cost_share_totals t
            WHERE t.job_id = $1 AND t.shares > 0
            GROUP BY t.model
        ),
        -- The job's attempts in the open tail that have no stored share (attempt_costs' order).
        open AS (
            SELECT a.model,
                   count(*) AS shares,
                   sum({GPU_S.format(s="o", a="a")}) AS gpu_s,
                   sum({COST.format(s="o", a="a")}) AS cost_usd
            FROM cost_tail_shares o
            {UNSTORED}
            WHERE {OF_JOB.format(a="a")}
            GROUP BY a.model
        ),
        costs AS (
            SELECT c.*,
                   CASE WHEN c.attempts > coalesce(s.shares, 0) + coalesce(o.shares, 0)
                        THEN coalesce(s.gpu_s, 0) + coalesce(o.gpu_s, 0) + c.zero_gpu_s
                        ELSE coalesce(s.gpu_s, 0) + coalesce(o.gpu_s, 0) END AS gpu_s,
                   CASE WHEN c.attempts > coalesce(s.shares, 0) + coalesce(o.shares, 0)
                        THEN coalesce(s.cost_usd, 0) + coalesce(o.cost_usd, 0) + c.zero_cost
                        ELSE coalesce(s.cost_usd, 0) + coalesce(o.cost_usd, 0) END AS cost_usd
            FROM counts c
            LEFT JOIN stored s ON s.model = c.model
            LEFT JOIN open o ON o.model = c.model
        )
"""

RETURNS = (
    "model text, attempts bigint, answers bigint, critiques bigint, refinements bigint, "
    "escalations bigint, errors bigint, prompt_tokens bigint, generated_tokens bigint, "
    "attributed_gpu_hours numeric, cost_usd numeric, provisioned_gpu_hours numeric, "
    "provisioned_cost_usd numeric, latency_p50_s double precision, latency_p95_s double precision, "
    "attributed_gpu_seconds numeric"
)

JOB_MODELS = f"""
CREATE OR REPLACE FUNCTION cost_job_models(job_id bigint) RETURNS TABLE ({RETURNS})
LANGUAGE sql STABLE {SETTINGS} AS $$
        -- One pass over the job's attempts, no share read: what is not a cost, and the job's window
        -- (cost_job_window's, per model here, then over the models).
        WITH {SPAN_CTE},
        counts AS (
            SELECT a.model,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE a.stage = 'answer') AS answers,
                   count(*) FILTER (WHERE a.stage = 'critique') AS critiques,
                   count(*) FILTER (WHERE a.stage = 'refine') AS refinements,
                   count(*) FILTER (WHERE a.escalated) AS escalations,
                   count(*) FILTER (WHERE a.status = 'error') AS errors,
                   coalesce(sum(a.prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(a.generated_tokens), 0) AS generated_tokens,
                   max(a.gpu_count) AS gpu_count,
                   max(a.usd_per_gpu_hour) AS usd_per_gpu_hour,
                   min(CASE WHEN {VALID.format(a="a")} THEN a.finished_at - make_interval(secs => a.busy_s)
                            ELSE a.finished_at END) AS first_start,
                   max(a.finished_at) AS last_end,
{ZEROS},
                   -- Both percentiles from one sort of the model's latencies.
                   percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY a.latency_s)
                       FILTER (WHERE a.status = 'ok') AS latency_s
{JOB_ATTEMPTS}        ),
        w AS (SELECT extract(epoch FROM max(last_end) - min(first_start)) AS window_s FROM counts),
{COSTS}        SELECT c.model, c.attempts, c.answers, c.critiques, c.refinements, c.escalations, c.errors,
               c.prompt_tokens, c.generated_tokens,
               c.gpu_s / 3600 AS attributed_gpu_hours,
               c.cost_usd,
               w.window_s * c.gpu_count / 3600 AS provisioned_gpu_hours,
               w.window_s * c.gpu_count * c.usd_per_gpu_hour / 3600 AS provisioned_cost_usd,
               c.latency_s[1] AS latency_p50_s, c.latency_s[2] AS latency_p95_s,
               c.gpu_s AS attributed_gpu_seconds
        FROM costs c
        CROSS JOIN w
$$
"""

# The planner cannot know how many attempts the span holds (its bounds are read at run time) and
# guesses a few thousand, so it sorts them by model; hashing them is what a million needs, and with
# no ordered aggregate here it is always right (enable_sort = off): 1.2 s less at 1M attempts.
# perfics' per-model figures of an unsealed job in the one pass: its costs (cost_job_models' very
# numerics), and what its quality rows need: how many prompts the model answered, and the span of
# the job's attempt ids (where its scores are looked up).
MODEL_SUMS_RETURNS = (
    "model text, attempts bigint, refinements bigint, cost_usd numeric, attributed_gpu_seconds numeric, "
    "answered bigint, first_attempt bigint, last_attempt bigint"
)
# A (prompt, model) has at most one answer per round (uq_attempts_step) and its rounds are >= 0 (the
# CHECK below); all but its lowest are taken out,
# looked up only for an answer above round 0 (Herd writes none: a count without a sort, where
# count(DISTINCT prompt_id) sorted every attempt of the job).
ANSWERED = """count(*) FILTER (WHERE a.stage = 'answer')
                   - count(*) FILTER (
                       WHERE a.stage = 'answer' AND a.round > 0
                         AND EXISTS (SELECT FROM attempts b
                                     WHERE b.prompt_id = a.prompt_id AND b.model = a.model
                                       AND b.stage = 'answer' AND b.round < a.round)
                   ) AS answered,
                   min(a.id) AS first_attempt, max(a.id) AS last_attempt"""
JOB_MODEL_SUMS = f"""
CREATE FUNCTION cost_job_model_sums(job_id bigint) RETURNS TABLE ({MODEL_SUMS_RETURNS})
LANGUAGE sql STABLE {SETTINGS} SET enable_sort = off AS $$
        WITH {SPAN_CTE},
        counts AS (
            SELECT a.model,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE a.stage = 'refine') AS refinements,
                   {ANSWERED},
{ZEROS}
{JOB_ATTEMPTS}        ),
{COSTS}        SELECT c.model, c.attempts, c.refinements, c.cost_usd, c.gpu_s AS attributed_gpu_seconds,
               c.answered, c.first_attempt, c.last_attempt
        FROM costs c
$$
"""

JOB_PERFICS = f"""
CREATE OR REPLACE FUNCTION cost_job_perfics(job_id bigint, entry_model text) RETURNS TABLE (
    policy text, kind text, scorer text, prompts bigint, quality_base double precision,
    quality_refined double precision, refinement_rounds numeric, cost_usd numeric,
    cost_per_1k_prompts_usd numeric, gpu_hours numeric)
LANGUAGE sql STABLE {SETTINGS} AS $$
        -- The job's prompts: their number and id span (index-only), and whether a router chose any.
        WITH {SPAN_CTE},
        job AS MATERIALIZED (
            SELECT (SELECT count(*) FROM prompts p WHERE p.job_id = $1) AS prompts, s.lo, s.hi,
                   EXISTS (SELECT FROM prompts p WHERE p.job_id = $1 AND p.router_version IS NOT NULL)
                       AS routed
            FROM span s
        ),
        sealed AS MATERIALIZED (SELECT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = $1) AS yes),
        -- An unsealed job's per-model costs and answered prompts, in the one pass over its attempts.
        live AS MATERIALIZED (
            SELECT m.* FROM cost_job_model_sums($1) m WHERE NOT (SELECT yes FROM sealed)
        ),
        model_sums AS (
            SELECT r.model, r.cost_usd, r.attributed_gpu_seconds, r.refinements
            FROM cost_rollups r
            WHERE r.job_id = $1
            UNION ALL
            -- The same sums, numeric for numeric (tests/unit/test_cost_share_totals.py).
            SELECT m.model, m.cost_usd, m.attributed_gpu_seconds, m.refinements
            FROM live m
        ),
        -- Per model: the prompts it answered (its own row's prompts) and the job's attempt-id span; a
        -- sealed job's costs are stored, so it reads only this of its attempts.
        answered AS MATERIALIZED (
            SELECT m.model, m.answered, m.first_attempt, m.last_attempt FROM live m
            UNION ALL
            SELECT a.model, {ANSWERED}
            FROM attempts a
            WHERE (SELECT yes FROM sealed) AND {OF_JOB.format(a="a")}
            GROUP BY a.model
        ),
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
                WHERE c.job_id = $1 AND c.prompt_id BETWEEN (SELECT lo FROM job) AND (SELECT hi FROM job)
                  AND (SELECT routed FROM job)
            ) x
            WHERE x.model = x.entry
        ),
        -- The job's scores, by the range of its attempt ids: only a scored prompt can move an average
        -- (an unscored one counts in the prompts, which come from `answered` and `job`).
        job_scores AS MATERIALIZED (
            SELECT a.prompt_id, s.scorer
            FROM scores s
            JOIN attempts a ON a.id = s.attempt_id
            WHERE s.attempt_id BETWEEN (SELECT min(first_attempt) FROM answered)
                                   AND (SELECT max(last_attempt) FROM answered)
              AND {OF_JOB.format(a="a")}
        ),
        -- Per (scored prompt, model): its first answer, its last good answer and its final answer.
        pm AS (
            SELECT a.prompt_id,
                   a.model,
                   p.router_version IS NOT NULL AS routed,
                   min(a.id) AS first_id,
                   (array_agg(a.id ORDER BY a.round, a.id) FILTER (WHERE a.stage = 'answer'))[1] AS base_id,
                   (array_agg(a.id ORDER BY a.stage = 'refine' DESC, a.round DESC, a.id DESC)
                       FILTER (WHERE a.stage IN ('answer', 'refine') AND a.status = 'ok'))[1] AS refined_id,
                   max(fin.attempt_id) AS final_id
            FROM (SELECT DISTINCT prompt_id FROM job_scores) sp
            JOIN prompts p ON p.id = sp.prompt_id
            JOIN attempts a ON a.prompt_id = sp.prompt_id
            LEFT JOIN finals fin ON fin.prompt_id = sp.prompt_id
            GROUP BY a.prompt_id, a.model, p.router_version
        ),
        -- Per scored prompt, in one aggregate: its entry model's first and last good answers (the
        -- job's entry model, or a routed prompt's first) and its final answer.
        entries AS (
            SELECT prompt_id,
                   CASE WHEN bool_or(routed) THEN (array_agg(base_id ORDER BY first_id))[1]
                        ELSE max(base_id) FILTER (WHERE model = $2) END AS base_id,
                   CASE WHEN bool_or(routed) THEN (array_agg(refined_id ORDER BY first_id))[1]
                        ELSE max(refined_id) FILTER (WHERE model = $2) END AS refined_id,
                   max(final_id) AS final_id
            FROM pm
            GROUP BY prompt_id
        ),
        -- The cascade and the counterfactual cover every prompt of the job, answered or not.
        whole AS (
            SELECT 'cascade' AS policy, 'cascade' AS kind
            UNION ALL
            SELECT CASE WHEN (SELECT routed FROM job) THEN 'routed entry' ELSE $2 || '-only' END,
                   'counterfactual'
        ),
        policy_prompts AS (
            SELECT model AS policy, 'model' AS kind, prompt_id, base_id, refined_id
            FROM pm
            WHERE base_id IS NOT NULL
            UNION ALL
            SELECT w.policy, w.kind, e.prompt_id, e.base_id,
                   CASE WHEN w.kind = 'cascade' THEN e.final_id ELSE e.refined_id END
            FROM entries e CROSS JOIN whole w
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
            SELECT 'routed entry', 'counterfactual', cost_usd, gpu_hours, refinements
            FROM entry_costs
            WHERE (SELECT routed FROM job)
        ),
        job_scorers AS (SELECT DISTINCT scorer FROM job_scores),
        scorers AS (
            SELECT scorer FROM job_scorers
            UNION ALL
            SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM job_scorers)
        ),
        scored AS (
            SELECT pp.policy, pp.kind, sc.scorer,
                   avg(base.score) AS quality_base,
                   avg(refined.score) AS quality_refined
            FROM policy_prompts pp
            CROSS JOIN scorers sc
            LEFT JOIN scores base ON base.attempt_id = pp.base_id AND base.scorer = sc.scorer
            LEFT JOIN scores refined ON refined.attempt_id = pp.refined_id AND refined.scorer = sc.scorer
            GROUP BY pp.policy, pp.kind, sc.scorer
        ),
        quality AS (
            -- Each model on the prompts it answered; the averages over those that are scored.
            SELECT m.model AS policy, 'model' AS kind, sc.scorer, m.answered AS prompts,
                   s.quality_base, s.quality_refined
            FROM answered m
            CROSS JOIN scorers sc
            LEFT JOIN scored s
                ON s.policy = m.model AND s.kind = 'model' AND s.scorer IS NOT DISTINCT FROM sc.scorer
            WHERE m.answered > 0
            UNION ALL
            -- Unanswered prompts count in the cascade's and the counterfactual's prompts and score
            -- nothing (an average skips them), as when every prompt had its row.
            SELECT w.policy, w.kind, sc.scorer, (SELECT prompts FROM job), s.quality_base, s.quality_refined
            FROM whole w
            CROSS JOIN scorers sc
            LEFT JOIN scored s
                ON s.policy = w.policy AND s.kind = w.kind AND s.scorer IS NOT DISTINCT FROM sc.scorer
            WHERE (SELECT prompts FROM job) > 0
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

# Per policy version: its finished prompts' count, budget keeps, final-answer quality and cost. When
# every finished prompt ran under one version (the usual job), its cost is the job's (running totals
# + open tail, no pass over its attempts) less what its unfinished prompts' attempts cost, and only
# scored prompts are costed one by one; a job under several versions costs each prompt (0010's way).
JOB_POLICY_VERSIONS = f"""
CREATE OR REPLACE FUNCTION cost_job_policy_versions(job_id bigint) RETURNS TABLE (
    policy_version integer, scorer text, prompts bigint, kept_for_budget bigint,
    quality double precision, cost_usd numeric, cost_per_1k_prompts_usd numeric)
LANGUAGE sql STABLE {SETTINGS} AS $$
        WITH {SPAN_CTE},
        versions AS MATERIALIZED (
            SELECT p.policy_version, count(*) AS prompts,
                   count(*) FILTER (WHERE p.note = 'budget') AS kept_for_budget
            FROM prompts p
            WHERE p.job_id = $1 AND p.state IN ('done', 'failed')
            GROUP BY p.policy_version
        ),
        one AS MATERIALIZED (SELECT count(*) = 1 AS yes FROM versions),
        final_scores AS MATERIALIZED (
            SELECT f.prompt_id, p.policy_version, p.note, s.scorer, s.score
            FROM finals f
            JOIN scores s ON s.attempt_id = f.attempt_id
            JOIN prompts p ON p.id = f.prompt_id AND p.job_id = $1 AND p.state IN ('done', 'failed')
            WHERE f.prompt_id BETWEEN (SELECT lo FROM span) AND (SELECT hi FROM span)
        ),
        sealed AS MATERIALIZED (SELECT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = $1) AS yes),
        -- The open tail's shares, swept once for both uses below (a sealed job has all its shares
        -- stored, and never sweeps the tail, which other jobs' attempts may fill).
        tail AS MATERIALIZED (
            SELECT o.attempt_id, o.shared_s FROM cost_tail_shares o WHERE NOT (SELECT yes FROM sealed)
        ),
        -- The tail's shares by attempt id, for lookups (attempt_costs' map; a CTE has no index).
        tail_map AS MATERIALIZED (
            SELECT coalesce(jsonb_object_agg(t.attempt_id::text, t.shared_s), '{{}}'::jsonb) AS shares
            FROM tail t
        ),
        -- The one version's path: the prompts costed one by one are the scored and the unfinished,
        -- each attempt as attempt_costs costs it (its stored share, else its tail share, else zero).
        costed AS MATERIALIZED (
            SELECT x.prompt_id, c.cost_usd
            FROM (
                SELECT prompt_id FROM final_scores
                UNION
                SELECT p.id FROM prompts p WHERE p.job_id = $1 AND p.state IN ('pending', 'queued', 'held')
            ) x
            -- Each prompt's attempts by key (OFFSET 0 keeps the planner from joining all of them).
            CROSS JOIN LATERAL (
                SELECT sum(
                           coalesce(
                               s.shared_s, ((SELECT m.shares FROM tail_map m) ->> a.id::text)::numeric, 0
                           )
                           * a.gpu_count * a.usd_per_gpu_hour / 3600
                       ) AS cost_usd
                FROM attempts a
                LEFT JOIN cost_shares s ON s.attempt_id = a.id
                WHERE a.prompt_id = x.prompt_id
                OFFSET 0
            ) c
            WHERE (SELECT yes FROM one)
        ),
        unfinished AS (
            SELECT coalesce(sum(c.cost_usd), 0) AS cost_usd
            FROM costed c
            JOIN prompts p ON p.id = c.prompt_id AND p.state IN ('pending', 'queued', 'held')
        ),
        -- The job's cost: a sealed job's rollup; else its running totals and its attempts' shares in
        -- the open tail (cost_job_model_sums' terms). CASE reads only the branch it takes.
        job_cost AS (
            SELECT CASE
                WHEN (SELECT yes FROM sealed)
                THEN (SELECT coalesce(sum(r.cost_usd), 0) FROM cost_rollups r WHERE r.job_id = $1)
                ELSE coalesce((SELECT sum(t.cost_usd) FROM cost_share_totals t WHERE t.job_id = $1), 0)
                   + coalesce((
                         SELECT sum({COST.format(s="o", a="a")})
                         FROM tail o
                         {UNSTORED}
                         WHERE {OF_JOB.format(a="a")}
                     ), 0)
                END AS cost_usd
        ),
        scored_prompts AS (
            SELECT DISTINCT fs.prompt_id, fs.note, coalesce(c.cost_usd, 0) AS cost_usd
            FROM final_scores fs
            LEFT JOIN costed c ON c.prompt_id = fs.prompt_id
        ),
        one_version AS (
            SELECT v.policy_version, fs.scorer, count(*) AS prompts,
                   count(*) FILTER (WHERE fs.note = 'budget') AS kept_for_budget,
                   avg(fs.score) AS quality,
                   coalesce(sum(c.cost_usd), 0) AS cost_usd
            FROM final_scores fs
            CROSS JOIN versions v
            LEFT JOIN costed c ON c.prompt_id = fs.prompt_id
            GROUP BY v.policy_version, fs.scorer
            UNION ALL
            -- The prompts without a scored final answer: the rest of the version.
            SELECT v.policy_version, NULL, v.prompts - s.prompts, v.kept_for_budget - s.kept,
                   NULL, (SELECT cost_usd FROM job_cost) - (SELECT cost_usd FROM unfinished) - s.cost_usd
            FROM versions v
            CROSS JOIN (
                SELECT count(*) AS prompts, count(*) FILTER (WHERE note = 'budget') AS kept,
                       coalesce(sum(cost_usd), 0) AS cost_usd
                FROM scored_prompts
            ) s
            WHERE v.prompts > s.prompts
        ),
        -- Several versions: every finished prompt's cost.
        prompt_costs AS (
            SELECT p.id AS prompt_id, p.policy_version, p.note, sum(c.cost_usd) AS cost_usd
            FROM prompts p
            LEFT JOIN attempt_costs c
                ON c.prompt_id = p.id AND c.job_id = $1
                AND c.prompt_id BETWEEN (SELECT lo FROM span) AND (SELECT hi FROM span)
            WHERE p.job_id = $1 AND p.state IN ('done', 'failed') AND NOT (SELECT yes FROM one)
            GROUP BY p.id, p.policy_version, p.note
        ),
        several AS (
            SELECT pc.policy_version, fs.scorer, count(*) AS prompts,
                   count(*) FILTER (WHERE pc.note = 'budget') AS kept_for_budget,
                   avg(fs.score) AS quality,
                   coalesce(sum(pc.cost_usd), 0) AS cost_usd
            FROM prompt_costs pc
            LEFT JOIN final_scores fs ON fs.prompt_id = pc.prompt_id
            GROUP BY pc.policy_version, fs.scorer
        )
        SELECT x.policy_version, x.scorer, x.prompts, x.kept_for_budget, x.quality, x.cost_usd,
               1000 * x.cost_usd / x.prompts AS cost_per_1k_prompts_usd
        FROM (
            SELECT * FROM one_version WHERE (SELECT yes FROM one)
            UNION ALL
            SELECT * FROM several WHERE NOT (SELECT yes FROM one)
        ) x
$$
"""


# 0017's functions, as PostgreSQL prints them back, for the downgrade (their bodies verbatim: the
# downgrade test compares them). SPAN_0017 stands for 0010's span of a job's prompt ids.
SPAN_0017 = (
    "(SELECT min(id) FROM prompts WHERE job_id = $1) AND (SELECT max(id) FROM prompts WHERE job_id = $1)"
)
PREVIOUS_JOB_WINDOW = """
CREATE OR REPLACE FUNCTION cost_job_window(job_id bigint)
 RETURNS TABLE(window_start timestamp with time zone, window_end timestamp with time zone,
    window_s numeric)
 LANGUAGE sql
 STABLE
 SET jit TO 'off'
AS $function$

            SELECT min(coalesce(b.busy_start, b.finished_at)) AS window_start,
                   max(b.finished_at) AS window_end,
                   extract(epoch FROM max(b.finished_at) - min(coalesce(b.busy_start, b.finished_at)))
                       AS window_s
            FROM attempt_busy b
            JOIN prompts p ON p.id = b.prompt_id
            WHERE p.job_id = $1 AND b.prompt_id BETWEEN SPAN_0017
            GROUP BY p.job_id

$function$
""".replace("SPAN_0017", SPAN_0017)
PREVIOUS_JOB_MODELS = """
CREATE OR REPLACE FUNCTION cost_job_models(job_id bigint)
 RETURNS TABLE(model text, attempts bigint, answers bigint, critiques bigint, refinements bigint,
    escalations bigint, errors bigint, prompt_tokens bigint, generated_tokens bigint,
    attributed_gpu_hours numeric, cost_usd numeric, provisioned_gpu_hours numeric,
    provisioned_cost_usd numeric, latency_p50_s double precision, latency_p95_s double precision,
    attributed_gpu_seconds numeric)
 LANGUAGE sql
 STABLE
 SET jit TO 'off'
AS $function$
        -- One pass over the job's attempts, no share read: what is not a cost.
        WITH counts AS (
            SELECT a.model,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE a.stage = 'answer') AS answers,
                   count(*) FILTER (WHERE a.stage = 'critique') AS critiques,
                   count(*) FILTER (WHERE a.stage = 'refine') AS refinements,
                   count(*) FILTER (WHERE a.escalated) AS escalations,
                   count(*) FILTER (WHERE a.status = 'error') AS errors,
                   coalesce(sum(a.prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(a.generated_tokens), 0) AS generated_tokens,
                   max(a.gpu_count) AS gpu_count,
                   max(a.usd_per_gpu_hour) AS usd_per_gpu_hour,
                   -- attempt_costs' zero for an attempt without any share, with its scale.
                   min(0::numeric * a.gpu_count) AS zero_gpu_s,
                   min(0::numeric * a.gpu_count * a.usd_per_gpu_hour / 3600) AS zero_cost,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_s)
                       FILTER (WHERE a.status = 'ok') AS latency_p50_s,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_s)
                       FILTER (WHERE a.status = 'ok') AS latency_p95_s
            FROM attempts a
            JOIN prompts p ON p.id = a.prompt_id
            WHERE p.job_id = $1 AND a.prompt_id BETWEEN SPAN_0017
            GROUP BY a.model
        ),
        -- The stored shares, from the running totals: each sum at its terms' largest scale.
        stored AS (
            SELECT t.model,
                   sum(t.shares) AS shares,
                   round(sum(t.gpu_s), max(t.gpu_scale)) AS gpu_s,
                   round(sum(t.cost_usd), max(t.cost_scale)) AS cost_usd
            FROM cost_share_totals t
            WHERE t.job_id = $1 AND t.shares > 0
            GROUP BY t.model
        ),
        -- The job's attempts in the open tail that have no stored share (attempt_costs' order).
        open AS (
            SELECT a.model,
                   count(*) AS shares,
                   sum(o.shared_s * a.gpu_count) AS gpu_s,
                   sum(o.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600) AS cost_usd
            FROM cost_tail_shares o
            JOIN attempts a ON a.id = o.attempt_id
            JOIN prompts p ON p.id = a.prompt_id AND p.job_id = $1
            WHERE NOT EXISTS (SELECT FROM cost_shares s WHERE s.attempt_id = o.attempt_id)
            GROUP BY a.model
        ),
        costs AS (
            SELECT c.*,
                   CASE WHEN c.attempts > coalesce(s.shares, 0) + coalesce(o.shares, 0)
                        THEN coalesce(s.gpu_s, 0) + coalesce(o.gpu_s, 0) + c.zero_gpu_s
                        ELSE coalesce(s.gpu_s, 0) + coalesce(o.gpu_s, 0) END AS gpu_s,
                   CASE WHEN c.attempts > coalesce(s.shares, 0) + coalesce(o.shares, 0)
                        THEN coalesce(s.cost_usd, 0) + coalesce(o.cost_usd, 0) + c.zero_cost
                        ELSE coalesce(s.cost_usd, 0) + coalesce(o.cost_usd, 0) END AS cost_usd
            FROM counts c
            LEFT JOIN stored s ON s.model = c.model
            LEFT JOIN open o ON o.model = c.model
        )
        SELECT c.model, c.attempts, c.answers, c.critiques, c.refinements, c.escalations, c.errors,
               c.prompt_tokens, c.generated_tokens,
               c.gpu_s / 3600 AS attributed_gpu_hours,
               c.cost_usd,
               w.window_s * c.gpu_count / 3600 AS provisioned_gpu_hours,
               w.window_s * c.gpu_count * c.usd_per_gpu_hour / 3600 AS provisioned_cost_usd,
               c.latency_p50_s, c.latency_p95_s,
               c.gpu_s AS attributed_gpu_seconds
        FROM costs c
        CROSS JOIN cost_job_window($1) w
$function$
""".replace("SPAN_0017", SPAN_0017)
PREVIOUS_JOB_MODEL_SUMS = """
CREATE OR REPLACE FUNCTION cost_job_model_sums(job_id bigint)
 RETURNS TABLE(model text, attempts bigint, refinements bigint, cost_usd numeric,
    attributed_gpu_seconds numeric)
 LANGUAGE sql
 STABLE
 SET jit TO 'off'
AS $function$
        WITH counts AS (
            SELECT a.model,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE a.stage = 'refine') AS refinements,
                   -- attempt_costs' zero for an attempt without any share, with its scale.
                   min(0::numeric * a.gpu_count) AS zero_gpu_s,
                   min(0::numeric * a.gpu_count * a.usd_per_gpu_hour / 3600) AS zero_cost
            FROM attempts a
            JOIN prompts p ON p.id = a.prompt_id
            WHERE p.job_id = $1 AND a.prompt_id BETWEEN SPAN_0017
            GROUP BY a.model
        ),
        -- The stored shares, from the running totals: each sum at its terms' largest scale.
        stored AS (
            SELECT t.model,
                   sum(t.shares) AS shares,
                   round(sum(t.gpu_s), max(t.gpu_scale)) AS gpu_s,
                   round(sum(t.cost_usd), max(t.cost_scale)) AS cost_usd
            FROM cost_share_totals t
            WHERE t.job_id = $1 AND t.shares > 0
            GROUP BY t.model
        ),
        -- The job's attempts in the open tail that have no stored share (attempt_costs' order).
        open AS (
            SELECT a.model,
                   count(*) AS shares,
                   sum(o.shared_s * a.gpu_count) AS gpu_s,
                   sum(o.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600) AS cost_usd
            FROM cost_tail_shares o
            JOIN attempts a ON a.id = o.attempt_id
            JOIN prompts p ON p.id = a.prompt_id AND p.job_id = $1
            WHERE NOT EXISTS (SELECT FROM cost_shares s WHERE s.attempt_id = o.attempt_id)
            GROUP BY a.model
        ),
        costs AS (
            SELECT c.*,
                   CASE WHEN c.attempts > coalesce(s.shares, 0) + coalesce(o.shares, 0)
                        THEN coalesce(s.gpu_s, 0) + coalesce(o.gpu_s, 0) + c.zero_gpu_s
                        ELSE coalesce(s.gpu_s, 0) + coalesce(o.gpu_s, 0) END AS gpu_s,
                   CASE WHEN c.attempts > coalesce(s.shares, 0) + coalesce(o.shares, 0)
                        THEN coalesce(s.cost_usd, 0) + coalesce(o.cost_usd, 0) + c.zero_cost
                        ELSE coalesce(s.cost_usd, 0) + coalesce(o.cost_usd, 0) END AS cost_usd
            FROM counts c
            LEFT JOIN stored s ON s.model = c.model
            LEFT JOIN open o ON o.model = c.model
        )
        SELECT c.model, c.attempts, c.refinements, c.cost_usd, c.gpu_s AS attributed_gpu_seconds
        FROM costs c
$function$
""".replace("SPAN_0017", SPAN_0017)
PREVIOUS_JOB_PERFICS = """
CREATE OR REPLACE FUNCTION cost_job_perfics(job_id bigint, entry_model text)
 RETURNS TABLE(policy text, kind text, scorer text, prompts bigint, quality_base double precision,
    quality_refined double precision, refinement_rounds numeric, cost_usd numeric,
    cost_per_1k_prompts_usd numeric, gpu_hours numeric)
 LANGUAGE sql
 STABLE
 SET jit TO 'off'
AS $function$
        -- The one pass over the job's prompts: their number, id span and whether a router chose any.
        WITH job AS (
            SELECT count(*) AS prompts, min(p.id) AS lo, max(p.id) AS hi,
                   coalesce(bool_or(p.router_version IS NOT NULL), false) AS routed
            FROM prompts p
            WHERE p.job_id = $1
        ),
        model_sums AS (
            SELECT r.model, r.cost_usd, r.attributed_gpu_seconds, r.refinements
            FROM cost_rollups r
            WHERE r.job_id = $1
            UNION ALL
            -- The same sums, numeric for numeric (tests/unit/test_cost_share_totals.py).
            SELECT m.model, m.cost_usd, m.attributed_gpu_seconds, m.refinements
            FROM cost_job_model_sums($1) m
            WHERE NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = $1)
        ),
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
                WHERE c.job_id = $1 AND c.prompt_id BETWEEN (SELECT lo FROM job) AND (SELECT hi FROM job)
                  AND (SELECT routed FROM job)
            ) x
            WHERE x.model = x.entry
        ),
        -- Per (prompt, model) with attempts: from the job's attempts, so a prompt never answered costs
        -- nothing here (a job of prompts without attempts made a row, two sorts and two aggregates
        -- per prompt before).
        pm AS (
            SELECT a.prompt_id,
                   a.model,
                   p.router_version IS NOT NULL AS routed,
                   min(a.id) AS first_id,
                   (array_agg(a.id ORDER BY a.round, a.id) FILTER (WHERE a.stage = 'answer'))[1] AS base_id,
                   (array_agg(a.id ORDER BY a.stage = 'refine' DESC, a.round DESC, a.id DESC)
                       FILTER (WHERE a.stage IN ('answer', 'refine') AND a.status = 'ok'))[1] AS refined_id,
                   max(fin.attempt_id) AS final_id
            FROM attempts a
            JOIN prompts p ON p.id = a.prompt_id AND p.job_id = $1
            LEFT JOIN finals fin ON fin.prompt_id = a.prompt_id
                                AND fin.prompt_id BETWEEN (SELECT lo FROM job) AND (SELECT hi FROM job)
            WHERE a.prompt_id BETWEEN (SELECT lo FROM job) AND (SELECT hi FROM job)
            GROUP BY a.prompt_id, a.model, p.router_version
        ),
        -- Per answered prompt, in one aggregate: its entry model's first and last good answers (the
        -- job's entry model, or a routed prompt's first) and its final answer.
        entries AS (
            SELECT prompt_id,
                   CASE WHEN bool_or(routed) THEN (array_agg(base_id ORDER BY first_id))[1]
                        ELSE max(base_id) FILTER (WHERE model = $2) END AS base_id,
                   CASE WHEN bool_or(routed) THEN (array_agg(refined_id ORDER BY first_id))[1]
                        ELSE max(refined_id) FILTER (WHERE model = $2) END AS refined_id,
                   max(final_id) AS final_id
            FROM pm
            GROUP BY prompt_id
        ),
        -- The cascade and the counterfactual cover every prompt of the job, answered or not.
        whole AS (
            SELECT 'cascade' AS policy, 'cascade' AS kind
            UNION ALL
            SELECT CASE WHEN (SELECT routed FROM job) THEN 'routed entry' ELSE $2 || '-only' END,
                   'counterfactual'
        ),
        policy_prompts AS (
            SELECT model AS policy, 'model' AS kind, prompt_id, base_id, refined_id
            FROM pm
            WHERE base_id IS NOT NULL
            UNION ALL
            SELECT w.policy, w.kind, e.prompt_id, e.base_id,
                   CASE WHEN w.kind = 'cascade' THEN e.final_id ELSE e.refined_id END
            FROM entries e CROSS JOIN whole w
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
            SELECT 'routed entry', 'counterfactual', cost_usd, gpu_hours, refinements
            FROM entry_costs
            WHERE (SELECT routed FROM job)
        ),
        job_scorers AS (
            SELECT DISTINCT s.scorer
            FROM pm
            JOIN attempts a ON a.prompt_id = pm.prompt_id AND a.model = pm.model
            JOIN scores s ON s.attempt_id = a.id
        ),
        scorers AS (
            SELECT scorer FROM job_scorers
            UNION ALL
            SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM job_scorers)
        ),
        scored AS (
            SELECT pp.policy, pp.kind, sc.scorer,
                   count(*) AS prompts,
                   avg(base.score) AS quality_base,
                   avg(refined.score) AS quality_refined
            FROM policy_prompts pp
            CROSS JOIN scorers sc
            LEFT JOIN scores base ON base.attempt_id = pp.base_id AND base.scorer = sc.scorer
            LEFT JOIN scores refined ON refined.attempt_id = pp.refined_id AND refined.scorer = sc.scorer
            GROUP BY pp.policy, pp.kind, sc.scorer
        ),
        quality AS (
            SELECT policy, kind, scorer, prompts, quality_base, quality_refined
            FROM scored
            WHERE kind = 'model'
            UNION ALL
            -- Unanswered prompts count in the cascade's and the counterfactual's prompts and score
            -- nothing (an average skips them), as when every prompt had its row.
            SELECT w.policy, w.kind, sc.scorer, (SELECT prompts FROM job), s.quality_base, s.quality_refined
            FROM whole w
            CROSS JOIN scorers sc
            LEFT JOIN scored s
                ON s.policy = w.policy AND s.kind = w.kind AND s.scorer IS NOT DISTINCT FROM sc.scorer
            WHERE (SELECT prompts FROM job) > 0
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
$function$
"""
PREVIOUS_JOB_POLICY_VERSIONS = """
CREATE OR REPLACE FUNCTION cost_job_policy_versions(job_id bigint)
 RETURNS TABLE(policy_version integer, scorer text, prompts bigint, kept_for_budget bigint,
    quality double precision, cost_usd numeric, cost_per_1k_prompts_usd numeric)
 LANGUAGE sql
 STABLE
 SET jit TO 'off'
AS $function$
        WITH prompt_costs AS (
            SELECT p.id AS prompt_id, p.policy_version, p.note, sum(c.cost_usd) AS cost_usd
            FROM prompts p
            LEFT JOIN attempt_costs c
                ON c.prompt_id = p.id AND c.job_id = $1 AND c.prompt_id BETWEEN SPAN_0017
            WHERE p.job_id = $1 AND p.state IN ('done', 'failed')
            GROUP BY p.id, p.policy_version, p.note
        ),
        final_scores AS (
            SELECT f.prompt_id, s.scorer, s.score
            FROM finals f
            JOIN scores s ON s.attempt_id = f.attempt_id
            WHERE f.prompt_id BETWEEN SPAN_0017
        )
        SELECT pc.policy_version,
               fs.scorer,
               count(*) AS prompts,
               count(*) FILTER (WHERE pc.note = 'budget') AS kept_for_budget,
               avg(fs.score) AS quality,
               coalesce(sum(pc.cost_usd), 0) AS cost_usd,
               1000 * coalesce(sum(pc.cost_usd), 0) / count(*) AS cost_per_1k_prompts_usd
        FROM prompt_costs pc
        LEFT JOIN final_scores fs ON fs.prompt_id = pc.prompt_id
        GROUP BY pc.policy_version, fs.scorer
$function$
""".replace("SPAN_0017", SPAN_0017)


def upgrade() -> None:
    op.create_index(
        "ix_prompts_routed", "prompts", ["job_id"], postgresql_where=sa.text("router_version IS NOT NULL")
    )
    # Rounds count refinements from 0 (herd/vocabulary.py StepKey); ANSWERED relies on it. Checking
    # every attempt holds the table's lock until this revision commits (seconds at 10M attempts):
    # workers wait, none fails. The index is built the same way (CONCURRENTLY cannot run in a
    # migration's transaction).
    op.execute("ALTER TABLE attempts ADD CONSTRAINT ck_attempts_round CHECK (round >= 0)")
    op.execute(JOB_SPAN)
    op.execute(JOB_WINDOW)
    op.execute(JOB_MODELS)
    # New columns: a function's result type cannot be replaced in place. Only cost_job_perfics calls
    # it, and a SQL function's body holds no dependency, so nothing else has to go first.
    op.execute("DROP FUNCTION cost_job_model_sums(bigint)")
    op.execute(JOB_MODEL_SUMS)
    op.execute(JOB_PERFICS)
    op.execute(JOB_POLICY_VERSIONS)


def downgrade() -> None:
    op.execute("DROP FUNCTION cost_job_model_sums(bigint)")
    op.execute(PREVIOUS_JOB_MODEL_SUMS)
    op.execute(PREVIOUS_JOB_WINDOW)
    op.execute(PREVIOUS_JOB_MODELS)
    op.execute(PREVIOUS_JOB_PERFICS)
    op.execute(PREVIOUS_JOB_POLICY_VERSIONS)
    op.execute("DROP FUNCTION cost_job_span(bigint)")
    op.execute("ALTER TABLE attempts DROP CONSTRAINT ck_attempts_round")
    op.drop_index("ix_prompts_routed", table_name="prompts")

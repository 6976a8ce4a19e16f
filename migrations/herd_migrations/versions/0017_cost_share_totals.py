"""Running totals of each job's final cost shares, so an unsealed job reads only its open tail live.

A job that is not sealed (running, or finished a minute ago) had every cost figure computed from all
its attempts: `cost_job_models` read `attempt_costs`, which joins each attempt to its stored share
and looks the open tail up per attempt. `herd report` on a running job of 1M attempts took minutes.

This revision:

- **cost_shares carries what a total needs**: the attempt's job and model, and its share's GPU
  seconds (`shared_s * gpu_count`) and cost (`shared_s * gpu_count * usd_per_gpu_hour / 3600`),
  0003's per-attempt expressions, so a share row can be added to and taken out of a total without
  its attempt (a cascade from a deleted attempt runs after the attempt is gone). The fill of
  herd/ledger/shares.py computes them in the INSERT that stores the slice's shares (one join, no
  work per row); a row trigger fills them only for a writer that leaves them out (an older fill
  while this migration lands) or changes `shared_s` alone; a statement trigger on attempts keeps
  them in step when an attempt's prompt, model, GPU count or price changes.
- **cost_share_totals**, per (job, model, scale of the GPU seconds, scale of the cost): how many
  shares and their sums. Statement triggers on cost_shares add what is inserted and take out what is
  deleted, whoever does it (the fill, its rewind, a cascade): one aggregate over the statement's
  transition table per statement, upserted in key order (two writers lock totals rows in the same
  order, so they cannot deadlock on them; the fill also holds its advisory lock). The two scales
  are in the key because a `numeric` sum's display scale is the largest of its terms' and the views
  divide sums by 3600 (a quotient's digits depend on the dividend's scale): `round(sum, largest scale
  with shares)` is then the very `numeric` the views' `sum()` over the same rows gives, digit for digit.
- **cost_tail_shares**, the view of the open tail's shares (0016's sweep of every endpoint's time
  after `closed_until`, with the carried parts): one row per attempt whose share is not final.
- **cost_job_models** (same signature and columns): counts, tokens and latency percentiles from the
  job's attempts (no join to any share), and its costs = the job's totals + its attempts in the open
  tail without a stored share + the zero `attempt_costs` gives an attempt with neither (an invalid
  busy interval, or a late arrival before the fill rewinds) when there is one. So `job_model_costs`,
  `job_costs`, `model_costs` and the seal read a running job's attempts once, without its shares.
- **cost_job_model_sums**: the same costs (the same SQL) with only the attempts and refinements
  counted, no latency percentiles and no window: `perfics_inputs`' live per-model sums.

The numbers are those of `attempt_costs` (tests/unit/test_cost_share_totals.py compares them on
seeded random ledgers with late arrivals, rewinds and deletes).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# A busy interval exists only for a positive, finite busy_s (0009's rule, restated).
VALID = "{a}.endpoint IS NOT NULL AND {a}.busy_s > 0 AND {a}.busy_s < 'Infinity'"

# The per-attempt figures of a share `s` of attempt `a` (0003's expressions in attempt_costs).
GPU_S = "{s}.shared_s * {a}.gpu_count"
COST = "{s}.shared_s * {a}.gpu_count * {a}.usd_per_gpu_hour / 3600"

# 0016's tail, as its own view: the attempts whose share is not final and their shares.
TAIL_SHARES = f"""
        WITH tail AS (
            SELECT a.id AS attempt_id,
                   m.endpoint,
                   a.finished_at AS busy_end,
                   greatest(a.finished_at - make_interval(secs => a.busy_s), m.closed_until) AS lo
            FROM cost_share_marks m
            CROSS JOIN LATERAL (
                SELECT a.id, a.busy_s, a.finished_at
                FROM attempts a
                WHERE a.endpoint = m.endpoint AND a.finished_at > m.closed_until AND {VALID.format(a="a")}
                ORDER BY a.finished_at
            ) a
        ),
        events AS (
            SELECT endpoint, lo AS t, 1 AS delta FROM tail
            UNION ALL
            SELECT endpoint, busy_end AS t, -1 AS delta FROM tail
        ),
        instants AS (
            SELECT endpoint, t, sum(delta) AS delta
            FROM events
            GROUP BY endpoint, t
        ),
        segments AS (
            SELECT endpoint,
                   t,
                   sum(delta) OVER w AS in_flight,
                   extract(epoch FROM lead(t) OVER w - t) AS length_s
            FROM instants
            WINDOW w AS (PARTITION BY endpoint ORDER BY t)
        ),
        cumulative AS (
            SELECT endpoint,
                   t,
                   coalesce(sum(length_s / nullif(in_flight, 0)) OVER (
                       PARTITION BY endpoint ORDER BY t
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS c
            FROM segments
        )
        SELECT b.attempt_id,
               c_end.c - c_start.c + coalesce(k.part_s, 0) AS shared_s
        FROM tail b
        JOIN cumulative c_start ON c_start.endpoint = b.endpoint AND c_start.t = b.lo
        JOIN cumulative c_end ON c_end.endpoint = b.endpoint AND c_end.t = b.busy_end
        LEFT JOIN (
            SELECT attempt_id, sum(part_s) AS part_s FROM cost_share_carry GROUP BY attempt_id
        ) k ON k.attempt_id = b.attempt_id
"""

# Same span as 0010's: lets the planner read the job's attempts by a range of their prompt ids.
SPAN = (
    "{col} BETWEEN (SELECT min(id) FROM prompts WHERE job_id = $1) "
    "AND (SELECT max(id) FROM prompts WHERE job_id = $1)"
)

RETURNS = (
    "model text, attempts bigint, answers bigint, critiques bigint, refinements bigint, "
    "escalations bigint, errors bigint, prompt_tokens bigint, generated_tokens bigint, "
    "attributed_gpu_hours numeric, cost_usd numeric, provisioned_gpu_hours numeric, "
    "provisioned_cost_usd numeric, latency_p50_s double precision, latency_p95_s double precision, "
    "attributed_gpu_seconds numeric"
)

# What attempt_costs gives an attempt without any share (its zero, with its scale), per model.
ZEROS = """                   -- attempt_costs' zero for an attempt without any share, with its scale.
                   min(0::numeric * a.gpu_count) AS zero_gpu_s,
                   min(0::numeric * a.gpu_count * a.usd_per_gpu_hour / 3600) AS zero_cost,
"""
# The job's attempts, per model (the FROM of both functions' `counts`).
JOB_ATTEMPTS = f"""            FROM attempts a
            JOIN prompts p ON p.id = a.prompt_id
            WHERE p.job_id = $1 AND {SPAN.format(col="a.prompt_id")}
            GROUP BY a.model
"""

# A job's costs per model from what `counts` gives (attempts, and the zeros attempt_costs gives an
# attempt without any share): its totals + its open tail's shares + that zero where an attempt has
# neither. Shared by cost_job_models and cost_job_model_sums, so both give the same numerics.
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
"""

JOB_MODELS = f"""
CREATE OR REPLACE FUNCTION cost_job_models(job_id bigint) RETURNS TABLE ({RETURNS})
LANGUAGE sql STABLE SET jit = off AS $$
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
{ZEROS}                   percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_s)
                       FILTER (WHERE a.status = 'ok') AS latency_p50_s,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_s)
                       FILTER (WHERE a.status = 'ok') AS latency_p95_s
{JOB_ATTEMPTS}        ),
{COSTS}        SELECT c.model, c.attempts, c.answers, c.critiques, c.refinements, c.escalations, c.errors,
               c.prompt_tokens, c.generated_tokens,
               c.gpu_s / 3600 AS attributed_gpu_hours,
               c.cost_usd,
               w.window_s * c.gpu_count / 3600 AS provisioned_gpu_hours,
               w.window_s * c.gpu_count * c.usd_per_gpu_hour / 3600 AS provisioned_cost_usd,
               c.latency_p50_s, c.latency_p95_s,
               c.gpu_s AS attributed_gpu_seconds
        FROM costs c
        CROSS JOIN cost_job_window($1) w
$$
"""

# What perfics needs of an unsealed job's per-model figures (its cost, GPU seconds, refinements), the
# very numerics cost_job_models gives, without its latency percentiles (two sorts of the job's
# attempts) and its window (another pass over them): cost_job_perfics reads this.
JOB_MODEL_SUMS = f"""
CREATE OR REPLACE FUNCTION cost_job_model_sums(job_id bigint) RETURNS TABLE (
    model text, attempts bigint, refinements bigint, cost_usd numeric, attributed_gpu_seconds numeric)
LANGUAGE sql STABLE SET jit = off AS $$
        WITH counts AS (
            SELECT a.model,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE a.stage = 'refine') AS refinements,
{ZEROS.rstrip().rstrip(",")}
{JOB_ATTEMPTS}        ),
{COSTS}        SELECT c.model, c.attempts, c.refinements, c.cost_usd, c.gpu_s AS attributed_gpu_seconds
        FROM costs c
$$
"""

# The share row's totals columns from its attempt, for a writer that does not give them (the fill
# computes the same expressions in its INSERT, herd/ledger/shares.py).
SHARE_FILL = f"""
CREATE OR REPLACE FUNCTION cost_share_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.job_id, a.model, {GPU_S.format(s="NEW", a="a")}, {COST.format(s="NEW", a="a")}
    INTO NEW.job_id, NEW.model, NEW.gpu_s, NEW.cost_usd
    FROM attempts a JOIN prompts p ON p.id = a.prompt_id
    WHERE a.id = NEW.attempt_id;
    RETURN NEW;
END
$$
"""

# Adds (sign 1) the share rows of transition table `changed` to the totals, or takes them out (-1).
# Taking out only updates: a job being deleted may have lost its totals rows already.
TOTALS_ADD = """
CREATE OR REPLACE FUNCTION cost_share_totals_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cost_share_totals AS t (job_id, model, gpu_scale, cost_scale, shares, gpu_s, cost_usd)
    SELECT c.job_id, c.model, scale(c.gpu_s), scale(c.cost_usd), count(*), sum(c.gpu_s), sum(c.cost_usd)
    FROM changed c
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (job_id, model, gpu_scale, cost_scale) DO UPDATE
    SET shares = t.shares + excluded.shares, gpu_s = t.gpu_s + excluded.gpu_s,
        cost_usd = t.cost_usd + excluded.cost_usd;
    RETURN NULL;
END
$$
"""

TOTALS_TAKE = """
CREATE OR REPLACE FUNCTION cost_share_totals_take() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Lock the rows in key order first, as the add's ordered upsert does: no two writers deadlock.
    PERFORM FROM cost_share_totals t
    WHERE (t.job_id, t.model, t.gpu_scale, t.cost_scale) IN (
        SELECT c.job_id, c.model, scale(c.gpu_s), scale(c.cost_usd) FROM changed c)
    ORDER BY t.job_id, t.model, t.gpu_scale, t.cost_scale
    FOR UPDATE OF t;
    UPDATE cost_share_totals t
    SET shares = t.shares - d.shares, gpu_s = t.gpu_s - d.gpu_s, cost_usd = t.cost_usd - d.cost_usd
    FROM (SELECT c.job_id, c.model, scale(c.gpu_s) AS gpu_scale, scale(c.cost_usd) AS cost_scale,
                 count(*) AS shares, sum(c.gpu_s) AS gpu_s, sum(c.cost_usd) AS cost_usd
          FROM changed c
          GROUP BY 1, 2, 3, 4) d
    WHERE t.job_id = d.job_id AND t.model = d.model AND t.gpu_scale = d.gpu_scale
      AND t.cost_scale = d.cost_scale;
    RETURN NULL;
END
$$
"""

TOTALS_RESET = """
CREATE OR REPLACE FUNCTION cost_share_totals_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM cost_share_totals;
    RETURN NULL;
END
$$
"""

# An attempt's prompt, model, GPU count or price changed: its share row follows (and so the totals).
ATTEMPTS_SYNC = f"""
CREATE OR REPLACE FUNCTION cost_share_attempts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cost_shares s
    SET job_id = p.job_id, model = c.model, gpu_s = {GPU_S.format(s="s", a="c")},
        cost_usd = {COST.format(s="s", a="c")}
    FROM changed c
    JOIN prompts p ON p.id = c.prompt_id
    WHERE s.attempt_id = c.id
      AND (s.job_id, s.model, s.gpu_s, s.cost_usd) IS DISTINCT FROM
          (p.job_id, c.model, {GPU_S.format(s="s", a="c")}, {COST.format(s="s", a="c")});
    RETURN NULL;
END
$$
"""

FUNCTIONS = [SHARE_FILL, TOTALS_ADD, TOTALS_TAKE, TOTALS_RESET, ATTEMPTS_SYNC]
FUNCTION_NAMES = [
    "cost_job_model_sums(bigint)",
    "cost_share_fill()",
    "cost_share_totals_add()",
    "cost_share_totals_take()",
    "cost_share_totals_reset()",
    "cost_share_attempts_sync()",
]

# (name, table, clause, function).
TRIGGERS = [
    (
        "cost_share_fill",
        "cost_shares",
        "BEFORE INSERT ON cost_shares FOR EACH ROW WHEN (NEW.job_id IS NULL)",
        "cost_share_fill()",
    ),
    (
        "cost_share_refill",
        "cost_shares",
        "BEFORE UPDATE OF shared_s ON cost_shares FOR EACH ROW "
        "WHEN (NEW.shared_s IS DISTINCT FROM OLD.shared_s AND NEW.gpu_s IS NOT DISTINCT FROM OLD.gpu_s)",
        "cost_share_fill()",
    ),
    (
        "cost_share_totals_insert",
        "cost_shares",
        "AFTER INSERT ON cost_shares REFERENCING NEW TABLE AS changed FOR EACH STATEMENT",
        "cost_share_totals_add()",
    ),
    (
        "cost_share_totals_update_old",
        "cost_shares",
        "AFTER UPDATE ON cost_shares REFERENCING OLD TABLE AS changed FOR EACH STATEMENT",
        "cost_share_totals_take()",
    ),
    (
        "cost_share_totals_update_new",
        "cost_shares",
        "AFTER UPDATE ON cost_shares REFERENCING NEW TABLE AS changed FOR EACH STATEMENT",
        "cost_share_totals_add()",
    ),
    (
        "cost_share_totals_delete",
        "cost_shares",
        "AFTER DELETE ON cost_shares REFERENCING OLD TABLE AS changed FOR EACH STATEMENT",
        "cost_share_totals_take()",
    ),
    (
        "cost_share_totals_truncate",
        "cost_shares",
        "AFTER TRUNCATE ON cost_shares FOR EACH STATEMENT",
        "cost_share_totals_reset()",
    ),
    (
        "cost_share_attempts_sync",
        "attempts",
        "AFTER UPDATE ON attempts REFERENCING NEW TABLE AS changed FOR EACH STATEMENT",
        "cost_share_attempts_sync()",
    ),
]

BACKFILL = f"""
UPDATE cost_shares s
SET job_id = p.job_id, model = a.model, gpu_s = {GPU_S.format(s="s", a="a")},
    cost_usd = {COST.format(s="s", a="a")}
FROM attempts a JOIN prompts p ON p.id = a.prompt_id
WHERE a.id = s.attempt_id
"""

BACKFILL_TOTALS = """
INSERT INTO cost_share_totals (job_id, model, gpu_scale, cost_scale, shares, gpu_s, cost_usd)
SELECT s.job_id, s.model, scale(s.gpu_s), scale(s.cost_usd), count(*), sum(s.gpu_s), sum(s.cost_usd)
FROM cost_shares s
GROUP BY 1, 2, 3, 4
"""

# 0010's cost_job_models, as it ran there, byte for byte (its blank lines and the space after SELECT
# included): downgrade() puts it back.
PREVIOUS_JOB_MODELS = f"""
CREATE OR REPLACE FUNCTION cost_job_models(job_id bigint) RETURNS TABLE ({RETURNS})
LANGUAGE sql STABLE SET jit = off AS $$

        SELECT{" "}
                   c.model,
                   count(*) AS attempts,
                   count(*) FILTER (WHERE c.stage = 'answer') AS answers,
                   count(*) FILTER (WHERE c.stage = 'critique') AS critiques,
                   count(*) FILTER (WHERE c.stage = 'refine') AS refinements,
                   count(*) FILTER (WHERE c.escalated) AS escalations,
                   count(*) FILTER (WHERE c.status = 'error') AS errors,
                   coalesce(sum(c.prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(c.generated_tokens), 0) AS generated_tokens,
                   sum(c.attributed_gpu_seconds) / 3600 AS attributed_gpu_hours,
                   sum(c.cost_usd) AS cost_usd,
                   w.window_s * max(c.gpu_count) / 3600 AS provisioned_gpu_hours,
                   w.window_s * max(c.gpu_count) * max(c.usd_per_gpu_hour) / 3600 AS provisioned_cost_usd,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY c.latency_s)
                       FILTER (WHERE c.status = 'ok') AS latency_p50_s,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY c.latency_s)
                       FILTER (WHERE c.status = 'ok') AS latency_p95_s,
                   sum(c.attributed_gpu_seconds) AS attributed_gpu_seconds

        FROM attempt_costs c
        CROSS JOIN cost_job_window($1) w
        WHERE c.job_id = $1 AND {SPAN.format(col="c.prompt_id")}
        GROUP BY c.model, w.window_s

$$
"""

# 0015's cost_job_perfics, whole; MODEL_SUMS_LIVE marks the one part this revision changes: an unsealed
# job's per-model sums, which read every attempt of the job through attempt_costs in 0015 and read
# cost_job_models (running totals + open tail) here.
PERFICS = """
CREATE OR REPLACE FUNCTION cost_job_perfics(job_id bigint, entry_model text) RETURNS TABLE (
    policy text, kind text, scorer text, prompts bigint, quality_base double precision,
    quality_refined double precision, refinement_rounds numeric, cost_usd numeric,
    cost_per_1k_prompts_usd numeric, gpu_hours numeric)
LANGUAGE sql STABLE SET jit = off AS $$
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
MODEL_SUMS_LIVE
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
$$
"""
MODEL_SUMS_LIVE = "MODEL_SUMS_LIVE"
JOB_PERFICS = PERFICS.replace(
    MODEL_SUMS_LIVE,
    """            -- The same sums, numeric for numeric (tests/unit/test_cost_share_totals.py).
            SELECT m.model, m.cost_usd, m.attributed_gpu_seconds, m.refinements
            FROM cost_job_model_sums($1) m
            WHERE NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = $1)""",
)
PREVIOUS_JOB_PERFICS = PERFICS.replace(
    MODEL_SUMS_LIVE,
    """            SELECT c.model, sum(c.cost_usd), sum(c.attributed_gpu_seconds),
                   count(*) FILTER (WHERE c.stage = 'refine')
            FROM attempt_costs c
            WHERE c.job_id = $1 AND c.prompt_id BETWEEN (SELECT lo FROM job) AND (SELECT hi FROM job)
              AND NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = $1)
            GROUP BY c.model""",
)


def upgrade() -> None:
    op.add_column("cost_shares", sa.Column("job_id", sa.BigInteger()))
    op.add_column("cost_shares", sa.Column("model", sa.Text()))
    op.add_column("cost_shares", sa.Column("gpu_s", sa.Numeric()))
    op.add_column("cost_shares", sa.Column("cost_usd", sa.Numeric()))
    op.create_table(
        "cost_share_totals",
        sa.Column("job_id", sa.BigInteger(), primary_key=True),
        sa.Column("model", sa.Text(), primary_key=True),
        sa.Column("gpu_scale", sa.Integer(), primary_key=True),
        sa.Column("cost_scale", sa.Integer(), primary_key=True),
        sa.Column("shares", sa.BigInteger(), nullable=False),
        sa.Column("gpu_s", sa.Numeric(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_cost_share_totals_job_id", ondelete="CASCADE"
        ),
    )
    op.execute(BACKFILL)
    op.execute(BACKFILL_TOTALS)
    for function in FUNCTIONS:
        op.execute(function)
    for name, _, clause, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {clause} EXECUTE FUNCTION {function}")
    op.execute(f"CREATE OR REPLACE VIEW cost_tail_shares AS {TAIL_SHARES}")
    op.execute(JOB_MODELS)
    op.execute(JOB_MODEL_SUMS)
    op.execute(JOB_PERFICS)


def downgrade() -> None:
    op.execute(PREVIOUS_JOB_PERFICS)
    op.execute(PREVIOUS_JOB_MODELS)
    op.execute("DROP VIEW IF EXISTS cost_tail_shares")
    for name, table, _, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for signature in FUNCTION_NAMES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.drop_table("cost_share_totals")
    for column in ("cost_usd", "gpu_s", "model", "job_id"):
        op.drop_column("cost_shares", column)

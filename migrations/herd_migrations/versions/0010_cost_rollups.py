"""Sealed job rollups, and cost views that read one job's rows for one job.

0009 stored each attempt's final share, but every cost view still aggregated the whole ledger: a
`WHERE job = ...` could not reach the base tables through `job_windows`, `perfics_inputs` or
`policy_version_quality` (grouped subqueries, materialized CTEs), and totals over all jobs summed every
attempt row. This revision:

- **Seals** a job once none of its attempts is in any endpoint's open tail (every share final):
  `herd.ledger.shares.fill` calls `cost_rollup_seal(job_id)`, which stores the job's `job_windows` row
  in `cost_rollup_jobs` and its `job_model_costs` rows (plus the raw attributed GPU seconds that
  `model_costs` sums) in `cost_rollups`, computed by the very expressions the views use on the very
  rows, so they are the views' numbers digit for digit (numeric sums are exact).
- **Unseals** (deletes the job's rollup, so the views compute it live again) whenever the stored rows
  could change: an attempt of the job inserted, updated or deleted, a prompt of it deleted (statement
  triggers), or a fill rewinding an endpoint it ran on for another job's late arrival
  (`herd.ledger.shares`). A job's rollup is all or nothing, so percentiles and windows stay exact.
- Replaces the job-scoped views so the job reaches the base tables: per job a LATERAL call of a
  per-job function (`cost_job_window`, `cost_job_models`, `cost_job_perfics`,
  `cost_job_policy_versions`) reads that job's prompts and attempts by index; `job_model_costs`,
  `job_windows`, `job_costs` and `model_costs` read sealed jobs from the rollup and compute only
  unsealed jobs live; `perfics_inputs` takes per-model costs from the rollup. Columns, their order and
  types are unchanged (docs/sql.md). The functions run with `jit = off`: the planner's whole-table
  guesses for the open tail made Postgres JIT-compile queries that run in milliseconds, for seconds.
- A per-job advisory lock (SEAL_LOCK), shared in the triggers and exclusive in a seal, so a seal,
  which runs outside the fill's lock on cost_share_marks, never stores figures a change missed.
- A TRUNCATE of attempts resets the marks, cuts, late notes and rollups (0009 left `closed_until`
  behind, so a reloaded ledger's old times were taken for closed).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = postgresql.TIMESTAMP(timezone=True)

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


# One job's window, from its attempts: 0003's job_windows aggregates for p.job_id = {job}.
WINDOW = """
            SELECT min(coalesce(b.busy_start, b.finished_at)) AS window_start,
                   max(b.finished_at) AS window_end,
                   extract(epoch FROM max(b.finished_at) - min(coalesce(b.busy_start, b.finished_at)))
                       AS window_s
            FROM attempt_busy b
            JOIN prompts p ON p.id = b.prompt_id
            WHERE p.job_id = {job} AND {span}
            GROUP BY p.job_id
"""

# One job's rows of job_model_costs after (job, task), from attempt_costs `c` and the job's window `w`:
# 0003's expressions, plus the raw attributed GPU seconds model_costs sums before dividing.
MODEL_FIGURES = """
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
"""
FIGURE_COLUMNS = (
    "model attempts answers critiques refinements escalations errors prompt_tokens generated_tokens "
    "attributed_gpu_hours cost_usd provisioned_gpu_hours provisioned_cost_usd latency_p50_s latency_p95_s"
).split()

UNSEALED = "NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = j.id)"

# Per-job functions: each reads one job's rows, planned inside the function with the job id as a
# parameter (so row estimates are one job's, from the statistics of prompts.job_id). SET jit = off:
# the planner's estimates for the open tail are whole-table guesses, and Postgres would spend seconds
# compiling a query that runs in milliseconds; the views calling them stay cheap to plan.
FUNCTION = """
CREATE OR REPLACE FUNCTION {name}(job_id bigint) RETURNS TABLE ({returns})
LANGUAGE sql STABLE SET jit = off AS $$
{body}
$$
"""

JOB_WINDOW = FUNCTION.format(
    name="cost_job_window",
    returns="window_start timestamptz, window_end timestamptz, window_s numeric",
    body=WINDOW.format(job="$1", span=span("b.prompt_id", "$1")),
)

JOB_MODELS = FUNCTION.format(
    name="cost_job_models",
    returns=(
        "model text, attempts bigint, answers bigint, critiques bigint, refinements bigint, "
        "escalations bigint, errors bigint, prompt_tokens bigint, generated_tokens bigint, "
        "attributed_gpu_hours numeric, cost_usd numeric, provisioned_gpu_hours numeric, "
        "provisioned_cost_usd numeric, latency_p50_s double precision, latency_p95_s double precision, "
        "attributed_gpu_seconds numeric"
    ),
    body=f"""
        SELECT {MODEL_FIGURES}
        FROM attempt_costs c
        CROSS JOIN cost_job_window($1) w
        WHERE c.job_id = $1 AND {span("c.prompt_id", "$1")}
        GROUP BY c.model, w.window_s
""",
)

SEAL = f"""
CREATE OR REPLACE FUNCTION cost_rollup_seal(job_id bigint) RETURNS integer LANGUAGE sql SET jit = off AS $$
    INSERT INTO cost_rollup_jobs (job_id, window_start, window_end, window_s)
    SELECT $1, w.* FROM cost_job_window($1) w
    ON CONFLICT (job_id) DO NOTHING;
    WITH rows AS (
        INSERT INTO cost_rollups (job_id, {", ".join(FIGURE_COLUMNS)}, attributed_gpu_seconds)
        SELECT $1, m.* FROM cost_job_models($1) m
        ON CONFLICT (job_id, model) DO NOTHING
        RETURNING 1)
    SELECT count(*)::integer FROM rows
$$
"""

# A job's seal lock, taken shared by the triggers below for each job they change and exclusive by a
# fill sealing the job (herd/ledger/shares.py _SEAL_CLASS): a seal never commits a job's figures
# computed before a change the trigger could not see.
SEAL_LOCK = "pg_advisory_xact_lock_shared(1751478884, ({job} % 2147483647)::integer)"

# A changed attempt row `c` has a busy interval: 0009's rule.
VALID = "c.endpoint IS NOT NULL AND c.busy_s > 0 AND c.busy_s < 'Infinity'"

# 0009's note function (which notes late arrivals) and, after it, the unseal of the changed attempts' jobs.
NOTE = f"""
CREATE OR REPLACE FUNCTION cost_shares_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Conflicts with the fill's EXCLUSIVE lock: a fill waits for this transaction, or this
    -- statement waits for the fill and then compares against its new closed_until.
    LOCK TABLE cost_share_marks IN ROW EXCLUSIVE MODE;
    INSERT INTO cost_share_marks (endpoint)
    SELECT DISTINCT c.endpoint FROM changed c WHERE {VALID}
    ON CONFLICT (endpoint) DO NOTHING;
    INSERT INTO cost_share_late (endpoint, busy_start, busy_s)
    SELECT c.endpoint, c.finished_at - make_interval(secs => c.busy_s), c.busy_s
    FROM changed c
    JOIN cost_share_marks m ON m.endpoint = c.endpoint
    WHERE {VALID}
      AND c.finished_at - make_interval(secs => c.busy_s) < m.closed_until;
    PERFORM {SEAL_LOCK.format(job="j.job_id")}
    FROM (SELECT DISTINCT p.job_id FROM prompts p WHERE p.id IN (SELECT c.prompt_id FROM changed c)) j;
    DELETE FROM cost_rollup_jobs s USING prompts p
    WHERE p.id IN (SELECT c.prompt_id FROM changed c) AND s.job_id = p.job_id;
    RETURN NULL;
END
$$
"""

UNSEAL_PROMPTS = f"""
CREATE OR REPLACE FUNCTION cost_rollup_unseal_prompts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {SEAL_LOCK.format(job="j.job_id")} FROM (SELECT DISTINCT c.job_id FROM changed c) j;
    DELETE FROM cost_rollup_jobs s WHERE s.job_id IN (SELECT c.job_id FROM changed c);
    RETURN NULL;
END
$$
"""

RESET = """
CREATE OR REPLACE FUNCTION cost_shares_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- cost_shares and cost_share_carry reference attempts, so the TRUNCATE emptied them already.
    DELETE FROM cost_share_late;
    DELETE FROM cost_share_cuts;
    DELETE FROM cost_share_marks;
    DELETE FROM cost_rollup_jobs;
    RETURN NULL;
END
$$
"""

TRIGGERS = [
    (
        "cost_rollup_prompts_delete",
        "AFTER DELETE ON prompts REFERENCING OLD TABLE AS changed",
        "cost_rollup_unseal_prompts()",
    ),
    ("cost_shares_truncate", "AFTER TRUNCATE ON attempts", "cost_shares_reset()"),
]

_FIGURES_OUT = ", ".join(f"r.{c}" for c in FIGURE_COLUMNS)
_FIGURES_LIVE = ", ".join(f"m.{c}" for c in FIGURE_COLUMNS)

VIEWS: list[tuple[str, str]] = [
    (
        "job_windows",
        f"""
        SELECT s.job_id, j.name AS job, s.window_start, s.window_end, s.window_s
        FROM cost_rollup_jobs s
        JOIN jobs j ON j.id = s.job_id
        UNION ALL
        SELECT j.id, j.name, w.window_start, w.window_end, w.window_s
        FROM jobs j
        CROSS JOIN LATERAL cost_job_window(j.id) w
        WHERE {UNSEALED}
        """,
    ),
    (
        "job_model_costs",
        f"""
        SELECT j.name AS job, j.task, {_FIGURES_OUT}
        FROM cost_rollups r
        JOIN jobs j ON j.id = r.job_id
        UNION ALL
        SELECT j.name, j.task, {_FIGURES_LIVE}
        FROM jobs j
        CROSS JOIN LATERAL cost_job_models(j.id) m
        WHERE {UNSEALED}
        """,
    ),
    (
        # Every job, also one without attempts yet; each LATERAL reads only that job's rows.
        "job_costs",
        """
        SELECT j.name AS job,
               j.task,
               coalesce(pc.prompts, 0) AS prompts,
               coalesce(pc.done, 0) AS done,
               coalesce(pc.failed, 0) AS failed,
               w.window_start,
               w.window_end,
               coalesce(m.attributed_gpu_hours, 0) AS attributed_gpu_hours,
               coalesce(m.cost_usd, 0) AS cost_usd,
               coalesce(m.provisioned_gpu_hours, 0) AS provisioned_gpu_hours,
               coalesce(m.provisioned_cost_usd, 0) AS provisioned_cost_usd,
               1000 * coalesce(m.cost_usd, 0) / nullif(pc.prompts, 0) AS cost_per_1k_prompts_usd
        FROM jobs j
        CROSS JOIN LATERAL (
            SELECT count(*) AS prompts,
                   count(*) FILTER (WHERE state = 'done') AS done,
                   count(*) FILTER (WHERE state = 'failed') AS failed
            FROM prompts
            WHERE job_id = j.id
        ) pc
        LEFT JOIN LATERAL (SELECT * FROM job_windows w WHERE w.job_id = j.id) w ON true
        CROSS JOIN LATERAL (
            SELECT sum(attributed_gpu_hours) AS attributed_gpu_hours,
                   sum(cost_usd) AS cost_usd,
                   sum(provisioned_gpu_hours) AS provisioned_gpu_hours,
                   sum(provisioned_cost_usd) AS provisioned_cost_usd
            FROM job_model_costs jm
            WHERE jm.job = j.name
        ) m
        """,
    ),
    (
        "model_costs",
        """
        SELECT model,
               sum(attempts)::bigint AS attempts,
               sum(attributed_gpu_seconds) / 3600 AS attributed_gpu_hours,
               sum(cost_usd) AS cost_usd
        FROM (
            SELECT r.model, r.attempts, r.attributed_gpu_seconds, r.cost_usd
            FROM cost_rollups r
            UNION ALL
            SELECT m.model, m.attempts, m.attributed_gpu_seconds, m.cost_usd
            FROM jobs j
            CROSS JOIN LATERAL cost_job_models(j.id) m
            WHERE """
        + UNSEALED
        + """
        ) u
        GROUP BY model
        """,
    ),
]

# 0003's perfics_inputs, per job `j`. firsts, lasts and the finals become one aggregate per (prompt,
# model) over the job's prompts joined with their attempts and finals (`pm`), the policies' prompts are
# read from it without joining one derived set to another: the planner cannot know how many rows a
# job has (its estimates come from the whole table), and a nested loop over two CTEs it takes for
# small is quadratic. Same first answer (lowest round, then id) and last good answer (highest-round
# successful refinement, else the answer) as 0003.
PERFICS_INPUTS = """
        SELECT j.name AS job, j.task, x.*
        FROM jobs j
        CROSS JOIN LATERAL cost_job_perfics(j.id, j.entry_model) x
        """

JOB_PERFICS = f"""
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

# 0006's policy_version_quality, per job `j`: each prompt's cost summed in one aggregate over the
# prompt joined with its attempts (not a per-prompt derived set joined back to prompts), then its
# final answer's scores.
POLICY_VERSION_QUALITY = """
        SELECT j.name AS job, j.task, x.*
        FROM jobs j
        CROSS JOIN LATERAL cost_job_policy_versions(j.id) x
        """

JOB_POLICY_VERSIONS = f"""
CREATE OR REPLACE FUNCTION cost_job_policy_versions(job_id bigint) RETURNS TABLE (
    policy_version integer, scorer text, prompts bigint, kept_for_budget bigint,
    quality double precision, cost_usd numeric, cost_per_1k_prompts_usd numeric)
LANGUAGE sql STABLE SET jit = off AS $$
        WITH prompt_costs AS (
            SELECT p.id AS prompt_id, p.policy_version, p.note, sum(c.cost_usd) AS cost_usd
            FROM prompts p
            LEFT JOIN attempt_costs c
                ON c.prompt_id = p.id AND c.job_id = $1 AND {span("c.prompt_id", "$1")}
            WHERE p.job_id = $1 AND p.state IN ('done', 'failed')
            GROUP BY p.id, p.policy_version, p.note
        ),
        final_scores AS (
            SELECT f.prompt_id, s.scorer, s.score
            FROM finals f
            JOIN scores s ON s.attempt_id = f.attempt_id
            WHERE {span("f.prompt_id", "$1")}
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
$$
"""

VIEWS += [("perfics_inputs", PERFICS_INPUTS), ("policy_version_quality", POLICY_VERSION_QUALITY)]
# In dependency order; downgrade drops them in reverse (after the views that call them are replaced).
FUNCTIONS = [JOB_WINDOW, JOB_MODELS, JOB_PERFICS, JOB_POLICY_VERSIONS, SEAL]
FUNCTION_SIGNATURES = [
    "cost_job_window(bigint)",
    "cost_job_models(bigint)",
    "cost_job_perfics(bigint, text)",
    "cost_job_policy_versions(bigint)",
    "cost_rollup_seal(bigint)",
]


# What downgrade() puts back, as the revisions before wrote it: 0004's views (the sweep of the whole
# ledger), 0006's policy_version_quality, and 0009's note function (without the unseal).
PREVIOUS_VIEWS: dict[str, str] = {
    "job_windows": """
        SELECT p.job_id,
               j.name AS job,
               min(coalesce(b.busy_start, b.finished_at)) AS window_start,
               max(b.finished_at) AS window_end,
               extract(epoch FROM max(b.finished_at) - min(coalesce(b.busy_start, b.finished_at)))
                   AS window_s
        FROM attempt_busy b
        JOIN prompts p ON p.id = b.prompt_id
        JOIN jobs j ON j.id = p.job_id
        GROUP BY p.job_id, j.name
        """,
    "job_model_costs": """
        SELECT c.job,
               c.task,
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
                   FILTER (WHERE c.status = 'ok') AS latency_p95_s
        FROM attempt_costs c
        JOIN job_windows w ON w.job_id = c.job_id
        GROUP BY c.job_id, c.job, c.task, c.model, w.window_s
        """,
    "job_costs": """
        WITH prompt_counts AS (
            SELECT job_id,
                   count(*) AS prompts,
                   count(*) FILTER (WHERE state = 'done') AS done,
                   count(*) FILTER (WHERE state = 'failed') AS failed
            FROM prompts
            GROUP BY job_id
        ),
        model_totals AS (
            SELECT job,
                   sum(attributed_gpu_hours) AS attributed_gpu_hours,
                   sum(cost_usd) AS cost_usd,
                   sum(provisioned_gpu_hours) AS provisioned_gpu_hours,
                   sum(provisioned_cost_usd) AS provisioned_cost_usd
            FROM job_model_costs
            GROUP BY job
        )
        SELECT j.name AS job,
               j.task,
               coalesce(pc.prompts, 0) AS prompts,
               coalesce(pc.done, 0) AS done,
               coalesce(pc.failed, 0) AS failed,
               w.window_start,
               w.window_end,
               coalesce(m.attributed_gpu_hours, 0) AS attributed_gpu_hours,
               coalesce(m.cost_usd, 0) AS cost_usd,
               coalesce(m.provisioned_gpu_hours, 0) AS provisioned_gpu_hours,
               coalesce(m.provisioned_cost_usd, 0) AS provisioned_cost_usd,
               1000 * coalesce(m.cost_usd, 0) / nullif(pc.prompts, 0) AS cost_per_1k_prompts_usd
        FROM jobs j
        LEFT JOIN prompt_counts pc ON pc.job_id = j.id
        LEFT JOIN job_windows w ON w.job_id = j.id
        LEFT JOIN model_totals m ON m.job = j.name
        """,
    "model_costs": """
        SELECT model,
               count(*) AS attempts,
               sum(attributed_gpu_seconds) / 3600 AS attributed_gpu_hours,
               sum(cost_usd) AS cost_usd
        FROM attempt_costs
        GROUP BY model
        """,
    "perfics_inputs": """
        WITH costed AS (
            SELECT c.*, j.entry_model
            FROM attempt_costs c
            JOIN jobs j ON j.id = c.job_id
        ),
        -- A model's first answer to a prompt (base) and its last good one (refined): the
        -- highest-round successful refinement, else that first answer.
        firsts AS (
            SELECT DISTINCT ON (prompt_id, model) job_id, prompt_id, model, attempt_id
            FROM costed
            WHERE stage = 'answer'
            ORDER BY prompt_id, model, round, attempt_id
        ),
        lasts AS (
            SELECT DISTINCT ON (prompt_id, model) prompt_id, model, attempt_id
            FROM costed
            WHERE stage IN ('answer', 'refine') AND status = 'ok'
            ORDER BY prompt_id, model, stage = 'refine' DESC, round DESC, attempt_id DESC
        ),
        policy_prompts AS (
            SELECT f.job_id, f.model AS policy, 'model' AS kind, f.prompt_id,
                   f.attempt_id AS base_id, l.attempt_id AS refined_id
            FROM firsts f
            LEFT JOIN lasts l ON l.prompt_id = f.prompt_id AND l.model = f.model
            UNION ALL
            SELECT p.job_id, 'cascade', 'cascade', p.id, e.attempt_id, fin.attempt_id
            FROM prompts p
            JOIN jobs j ON j.id = p.job_id
            LEFT JOIN firsts e ON e.prompt_id = p.id AND e.model = j.entry_model
            LEFT JOIN finals fin ON fin.prompt_id = p.id
            UNION ALL
            SELECT p.job_id, j.entry_model || '-only', 'counterfactual', p.id, e.attempt_id, l.attempt_id
            FROM prompts p
            JOIN jobs j ON j.id = p.job_id
            LEFT JOIN firsts e ON e.prompt_id = p.id AND e.model = j.entry_model
            LEFT JOIN lasts l ON l.prompt_id = p.id AND l.model = j.entry_model
        ),
        policy_costs AS (
            SELECT job_id, model AS policy, 'model' AS kind, sum(cost_usd) AS cost_usd,
                   sum(attributed_gpu_seconds) / 3600 AS gpu_hours,
                   count(*) FILTER (WHERE stage = 'refine') AS refinements
            FROM costed
            GROUP BY job_id, model
            UNION ALL
            SELECT job_id, 'cascade', 'cascade', sum(cost_usd), sum(attributed_gpu_seconds) / 3600,
                   count(*) FILTER (WHERE stage = 'refine')
            FROM costed
            GROUP BY job_id
            UNION ALL
            SELECT job_id, entry_model || '-only', 'counterfactual', sum(cost_usd),
                   sum(attributed_gpu_seconds) / 3600, count(*) FILTER (WHERE stage = 'refine')
            FROM costed
            WHERE model = entry_model
            GROUP BY job_id, entry_model
        ),
        -- Every scorer that scored an attempt of the job; a job without any score gets one NULL
        -- scorer, so its policies and their costs still show.
        job_scorers AS (
            SELECT DISTINCT c.job_id, s.scorer
            FROM costed c
            JOIN scores s ON s.attempt_id = c.attempt_id
        ),
        scorers AS (
            SELECT job_id, scorer FROM job_scorers
            UNION ALL
            SELECT j.id, NULL FROM jobs j
            WHERE NOT EXISTS (SELECT 1 FROM job_scorers js WHERE js.job_id = j.id)
        ),
        quality AS (
            SELECT pp.job_id, pp.policy, pp.kind, sc.scorer,
                   count(*) AS prompts,
                   avg(base.score) AS quality_base,
                   avg(refined.score) AS quality_refined
            FROM policy_prompts pp
            JOIN scorers sc ON sc.job_id = pp.job_id
            LEFT JOIN scores base ON base.attempt_id = pp.base_id AND base.scorer = sc.scorer
            LEFT JOIN scores refined ON refined.attempt_id = pp.refined_id AND refined.scorer = sc.scorer
            GROUP BY pp.job_id, pp.policy, pp.kind, sc.scorer
        )
        SELECT j.name AS job,
               j.task,
               q.policy,
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
        JOIN jobs j ON j.id = q.job_id
        LEFT JOIN policy_costs pc ON pc.job_id = q.job_id AND pc.policy = q.policy AND pc.kind = q.kind
        """,
    "policy_version_quality": """
        WITH prompt_costs AS (
            SELECT prompt_id, sum(cost_usd) AS cost_usd
            FROM attempt_costs
            GROUP BY prompt_id
        ),
        final_scores AS (
            SELECT f.prompt_id, s.scorer, s.score
            FROM finals f
            JOIN scores s ON s.attempt_id = f.attempt_id
        )
        SELECT j.name AS job,
               j.task,
               p.policy_version,
               fs.scorer,
               count(*) AS prompts,
               count(*) FILTER (WHERE p.note = 'budget') AS kept_for_budget,
               avg(fs.score) AS quality,
               coalesce(sum(pc.cost_usd), 0) AS cost_usd,
               1000 * coalesce(sum(pc.cost_usd), 0) / count(*) AS cost_per_1k_prompts_usd
        FROM prompts p
        JOIN jobs j ON j.id = p.job_id
        LEFT JOIN prompt_costs pc ON pc.prompt_id = p.id
        LEFT JOIN final_scores fs ON fs.prompt_id = p.id
        WHERE p.state IN ('done', 'failed')
        GROUP BY j.name, j.task, p.policy_version, fs.scorer
        """,
}

PREVIOUS_NOTE = f"""
CREATE OR REPLACE FUNCTION cost_shares_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Conflicts with the fill's EXCLUSIVE lock: a fill waits for this transaction, or this
    -- statement waits for the fill and then compares against its new closed_until.
    LOCK TABLE cost_share_marks IN ROW EXCLUSIVE MODE;
    INSERT INTO cost_share_marks (endpoint)
    SELECT DISTINCT c.endpoint FROM changed c WHERE {VALID}
    ON CONFLICT (endpoint) DO NOTHING;
    INSERT INTO cost_share_late (endpoint, busy_start, busy_s)
    SELECT c.endpoint, c.finished_at - make_interval(secs => c.busy_s), c.busy_s
    FROM changed c
    JOIN cost_share_marks m ON m.endpoint = c.endpoint
    WHERE {VALID}
      AND c.finished_at - make_interval(secs => c.busy_s) < m.closed_until;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "cost_rollup_jobs",
        sa.Column("job_id", sa.BigInteger(), primary_key=True),
        sa.Column("window_start", TS),
        sa.Column("window_end", TS),
        sa.Column("window_s", sa.Numeric()),
        sa.Column("sealed_at", TS, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_cost_rollup_jobs_job_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "cost_rollups",
        sa.Column("job_id", sa.BigInteger(), primary_key=True),
        sa.Column("model", sa.Text(), primary_key=True),
        *[sa.Column(name, sa.BigInteger()) for name in FIGURE_COLUMNS[1:9]],
        *[sa.Column(name, sa.Numeric()) for name in FIGURE_COLUMNS[9:13]],
        *[sa.Column(name, sa.Float()) for name in FIGURE_COLUMNS[13:15]],
        sa.Column("attributed_gpu_seconds", sa.Numeric()),
        sa.ForeignKeyConstraint(
            ["job_id"], ["cost_rollup_jobs.job_id"], name="fk_cost_rollups_job_id", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_prompts_job_id_id", "prompts", ["job_id", "id"])
    op.execute(NOTE)
    op.execute(UNSEAL_PROMPTS)
    op.execute(RESET)
    for function in FUNCTIONS:
        op.execute(function)
    for name, clause, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {clause} FOR EACH STATEMENT EXECUTE FUNCTION {function}")
    for name, query in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")


def downgrade() -> None:
    for name, _ in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {PREVIOUS_VIEWS[name]}")
    for name, _, _ in TRIGGERS:
        table = "prompts" if "prompts" in name else "attempts"
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for signature in reversed(FUNCTION_SIGNATURES):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute("DROP FUNCTION IF EXISTS cost_shares_reset()")
    op.execute("DROP FUNCTION IF EXISTS cost_rollup_unseal_prompts()")
    op.execute(PREVIOUS_NOTE)
    op.drop_table("cost_rollups")
    op.drop_table("cost_rollup_jobs")
    op.drop_index("ix_prompts_job_id_id", table_name="prompts")

"""attempts.gpu_seconds -> attempts.busy_s, and the views that read it replaced.

The column always held the seconds a request kept its endpoint busy, before sharing among the
requests in flight and before multiplying by the endpoint's GPU count (docs/cost-model.md); its
name said GPU-seconds, which a reader of the SQL took for the charged quantity. The views keep
their public columns (`busy_s` and `attributed_gpu_seconds` were already named correctly).

Every view of 0003 is replaced, in its dependency order: two read the column (attempt_busy,
attempt_costs), the other seven are restated as they were. downgrade() puts 0003's text back
(PREVIOUS). Each query is written out here, not read from 0003, so this revision keeps meaning what
it meant when it ran.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIEWS: list[tuple[str, str]] = [
    (
        # When each attempt kept its endpoint busy: [finished_at - busy_s, finished_at].
        # NULL for attempts that never reached an endpoint (an error before the call). The upper
        # bound keeps out NaN and infinity (NaN > 0 is true in Postgres): one such row would make
        # make_interval fail, and with it every cost view.
        "attempt_busy",
        """
        SELECT a.id AS attempt_id,
               a.prompt_id,
               a.endpoint,
               a.finished_at,
               CASE WHEN a.endpoint IS NOT NULL AND a.busy_s > 0 AND a.busy_s < 'Infinity'
                    THEN a.finished_at - make_interval(secs => a.busy_s) END AS busy_start,
               CASE WHEN a.endpoint IS NOT NULL AND a.busy_s > 0 AND a.busy_s < 'Infinity'
                    THEN a.finished_at END AS busy_end
        FROM attempts a
        """,
    ),
    (
        # A job's active window: its first busy start to its last finished attempt.
        "job_windows",
        """
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
    ),
    (
        # Processor sharing as an event sweep (O(n log n), no range self-join): per endpoint, +1 at
        # each busy start and -1 at each busy end; the running sum is the number n of requests in
        # flight over each elementary segment, each of which gets segment length / n. C(t) is that
        # share accumulated up to instant t, and an attempt's share is C(busy_end) - C(busy_start).
        # Concurrent attempts of *other jobs* on the same endpoint share with it too: they held the
        # same GPUs. Every query of this view sweeps the whole ledger for that reason.
        "attempt_costs",
        """
        WITH busy AS (
            SELECT attempt_id, endpoint, busy_start, busy_end
            FROM attempt_busy
            WHERE busy_start IS NOT NULL
        ),
        events AS (
            SELECT endpoint, busy_start AS t, 1 AS delta FROM busy
            UNION ALL
            SELECT endpoint, busy_end AS t, -1 AS delta FROM busy
        ),
        -- One row per distinct instant: each starts an elementary segment [t, next t).
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
        ),
        shares AS (
            SELECT b.attempt_id, b.busy_start, b.busy_end, c_end.c - c_start.c AS shared_s
            FROM busy b
            JOIN cumulative c_start ON c_start.endpoint = b.endpoint AND c_start.t = b.busy_start
            JOIN cumulative c_end ON c_end.endpoint = b.endpoint AND c_end.t = b.busy_end
        )
        SELECT a.id AS attempt_id,
               a.prompt_id,
               p.job_id,
               j.name AS job,
               j.task,
               a.model,
               a.stage,
               a.round,
               a.status,
               a.escalated,
               a.endpoint,
               a.started_at,
               a.finished_at,
               s.busy_start,
               s.busy_end,
               a.busy_s AS busy_s,
               coalesce(s.shared_s, 0) AS shared_s,
               a.gpu_count,
               a.usd_per_gpu_hour,
               coalesce(s.shared_s, 0) * a.gpu_count AS attributed_gpu_seconds,
               coalesce(s.shared_s, 0) * a.gpu_count * a.usd_per_gpu_hour / 3600 AS cost_usd,
               a.latency_s,
               a.prompt_tokens,
               a.generated_tokens
        FROM attempts a
        JOIN prompts p ON p.id = a.prompt_id
        JOIN jobs j ON j.id = p.job_id
        LEFT JOIN shares s ON s.attempt_id = a.id
        """,
    ),
    (
        # A model's GPUs stay provisioned for the job's whole window, busy or not: that is what the
        # herd cost, next to what the work used. If the price changed mid-job, the highest applies.
        "job_model_costs",
        """
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
    ),
    (
        # Every job, also one without attempts yet. Cost per 1k prompts divides by all its prompts.
        "job_costs",
        """
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
    ),
    (
        "model_costs",
        """
        SELECT model,
               count(*) AS attempts,
               sum(attributed_gpu_seconds) / 3600 AS attributed_gpu_hours,
               sum(cost_usd) AS cost_usd
        FROM attempt_costs
        GROUP BY model
        """,
    ),
    (
        # The models that answered each prompt, in order; the share is of all the job's prompts.
        "escalation_paths",
        """
        WITH paths AS (
            SELECT prompt_id, string_agg(model, ' > ' ORDER BY finished_at, id) AS path
            FROM attempts
            WHERE stage = 'answer'
            GROUP BY prompt_id
        ),
        job_sizes AS (
            SELECT job_id, count(*) AS prompts FROM prompts GROUP BY job_id
        )
        SELECT j.name AS job,
               pa.path,
               f.model AS final_model,
               count(*) AS prompts,
               count(*)::numeric / js.prompts AS share
        FROM paths pa
        JOIN prompts p ON p.id = pa.prompt_id
        JOIN jobs j ON j.id = p.job_id
        JOIN job_sizes js ON js.job_id = p.job_id
        LEFT JOIN finals f ON f.prompt_id = p.id
        GROUP BY j.name, pa.path, f.model, js.prompts
        """,
    ),
    (
        # Successful attempts only: an error's latency measures the failure, not the model.
        "latency_percentiles",
        """
        SELECT j.name AS job,
               a.model,
               a.stage,
               count(*) AS attempts,
               avg(a.latency_s) AS mean_s,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_s) AS p50_s,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_s) AS p95_s,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY a.latency_s) AS p99_s
        FROM attempts a
        JOIN prompts p ON p.id = a.prompt_id
        JOIN jobs j ON j.id = p.job_id
        WHERE a.status = 'ok' AND a.latency_s IS NOT NULL
        GROUP BY j.name, a.model, a.stage
        """,
    ),
    (
        # Per job, policy and scorer: quality before/after refinement and attributed cost, the
        # inputs of PeRFICS (herd/reporting/perfics.py). Policies: each model on the prompts it answered;
        # 'cascade' (the final answers, every attempt's cost); '<entry model>-only' (the entry
        # model's answers to all prompts at its own cost: what skipping escalation would give).
        "perfics_inputs",
        """
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
    ),
]

# 0003's text of the two views that read the column, for downgrade(); the other seven are the same
# text as above.
PREVIOUS: dict[str, str] = {
    "attempt_busy": """
        SELECT a.id AS attempt_id,
               a.prompt_id,
               a.endpoint,
               a.finished_at,
               CASE WHEN a.endpoint IS NOT NULL AND a.gpu_seconds > 0 AND a.gpu_seconds < 'Infinity'
                    THEN a.finished_at - make_interval(secs => a.gpu_seconds) END AS busy_start,
               CASE WHEN a.endpoint IS NOT NULL AND a.gpu_seconds > 0 AND a.gpu_seconds < 'Infinity'
                    THEN a.finished_at END AS busy_end
        FROM attempts a
        """,
    "attempt_costs": """
        WITH busy AS (
            SELECT attempt_id, endpoint, busy_start, busy_end
            FROM attempt_busy
            WHERE busy_start IS NOT NULL
        ),
        events AS (
            SELECT endpoint, busy_start AS t, 1 AS delta FROM busy
            UNION ALL
            SELECT endpoint, busy_end AS t, -1 AS delta FROM busy
        ),
        -- One row per distinct instant: each starts an elementary segment [t, next t).
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
        ),
        shares AS (
            SELECT b.attempt_id, b.busy_start, b.busy_end, c_end.c - c_start.c AS shared_s
            FROM busy b
            JOIN cumulative c_start ON c_start.endpoint = b.endpoint AND c_start.t = b.busy_start
            JOIN cumulative c_end ON c_end.endpoint = b.endpoint AND c_end.t = b.busy_end
        )
        SELECT a.id AS attempt_id,
               a.prompt_id,
               p.job_id,
               j.name AS job,
               j.task,
               a.model,
               a.stage,
               a.round,
               a.status,
               a.escalated,
               a.endpoint,
               a.started_at,
               a.finished_at,
               s.busy_start,
               s.busy_end,
               a.gpu_seconds AS busy_s,
               coalesce(s.shared_s, 0) AS shared_s,
               a.gpu_count,
               a.usd_per_gpu_hour,
               coalesce(s.shared_s, 0) * a.gpu_count AS attributed_gpu_seconds,
               coalesce(s.shared_s, 0) * a.gpu_count * a.usd_per_gpu_hour / 3600 AS cost_usd,
               a.latency_s,
               a.prompt_tokens,
               a.generated_tokens
        FROM attempts a
        JOIN prompts p ON p.id = a.prompt_id
        JOIN jobs j ON j.id = p.job_id
        LEFT JOIN shares s ON s.attempt_id = a.id
        """,
}


def upgrade() -> None:
    # Postgres follows a renamed column inside existing views; replacing them as well keeps each
    # view's stored text equal to its source here, so `\d+ attempt_costs` reads like the code.
    op.alter_column("attempts", "gpu_seconds", new_column_name="busy_s")
    for name, query in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")


def downgrade() -> None:
    op.alter_column("attempts", "busy_s", new_column_name="gpu_seconds")
    for name, query in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {PREVIOUS.get(name, query)}")

"""attempt_costs: the open tail's shares computed once per query and looked up per attempt, never joined.

0009's `attempt_costs` sweeps the open tail (attempts whose endpoint's time is not closed yet) at
query time, and joins each attempt to its tail share. A job that has just landed has no planner
statistics yet (a new calibration job in a ledger autovacuum has not re-analyzed: its models are not
in the table's statistics), so the planner takes the job's attempts for one row and joins by nested
loop, re-running the tail per attempt: 1,500 prompts x 3 models took 45 to 71 s in one query, where
each attempt's carried part (a correlated subquery on `cost_share_carry`) ran 32 million times.
Now, whatever the plan:

- `tail_shares` is MATERIALIZED: computed once per query; the carried parts are one grouped join;
- each attempt reads its tail share from one jsonb object (attempt id -> share, numeric and exact)
  built once by an uncorrelated subquery, by a binary search: no join left that a misjudged plan
  could turn into a scan of the tail per attempt (9 models x 1,500 prompts: 30 s -> 0.6 s).

Same columns, same arithmetic, same numbers (tests/unit/test_cost_shares.py compares the view with
0004's full sweep). The benchmark: `python -m benchmarks.nine_models`.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# A busy interval exists only for a positive, finite busy_s (0009's rule, restated).
VALID = "{a}.endpoint IS NOT NULL AND {a}.busy_s > 0 AND {a}.busy_s < 'Infinity'"

# 0009's view with the two changes above; every other line as it was.
ATTEMPT_COSTS = f"""
        WITH tail AS (
            -- Attempts whose share is not final: busy end after their endpoint's closed_until. The
            -- part of their interval before closed_until is in cost_share_carry.
            -- LATERAL: one range scan of ix_attempts_endpoint_finished_at per endpoint, never a scan
            -- of the whole table (the planner cannot know how few rows are past closed_until).
            SELECT a.id AS attempt_id,
                   m.endpoint,
                   a.finished_at - make_interval(secs => a.busy_s) AS busy_start,
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
        ),
        -- MATERIALIZED: once per query, whatever the plan around it (see the docstring).
        tail_shares AS MATERIALIZED (
            SELECT b.attempt_id,
                   c_end.c - c_start.c + coalesce(k.part_s, 0) AS shared_s
            FROM tail b
            JOIN cumulative c_start ON c_start.endpoint = b.endpoint AND c_start.t = b.lo
            JOIN cumulative c_end ON c_end.endpoint = b.endpoint AND c_end.t = b.busy_end
            LEFT JOIN (
                SELECT attempt_id, sum(part_s) AS part_s FROM cost_share_carry GROUP BY attempt_id
            ) k ON k.attempt_id = b.attempt_id
        ),
        -- One jsonb object attempt id -> share (numeric, exact), read by an uncorrelated subquery
        -- (an InitPlan: built once) with a binary search per attempt: no join the planner could
        -- turn into one scan of the tail per attempt.
        tail_map AS MATERIALIZED (
            SELECT coalesce(jsonb_object_agg(attempt_id::text, shared_s), '{{}}'::jsonb) AS shares
            FROM tail_shares
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
               CASE WHEN {VALID.format(a="a")}
                    THEN a.finished_at - make_interval(secs => a.busy_s) END AS busy_start,
               CASE WHEN {VALID.format(a="a")} THEN a.finished_at END AS busy_end,
               a.busy_s,
               x.shared_s,
               a.gpu_count,
               a.usd_per_gpu_hour,
               x.shared_s * a.gpu_count AS attributed_gpu_seconds,
               x.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600 AS cost_usd,
               a.latency_s,
               a.prompt_tokens,
               a.generated_tokens
        FROM attempts a
        JOIN prompts p ON p.id = a.prompt_id
        JOIN jobs j ON j.id = p.job_id
        LEFT JOIN cost_shares s ON s.attempt_id = a.id
        CROSS JOIN LATERAL (
            SELECT coalesce(
                s.shared_s, ((SELECT m.shares FROM tail_map m) ->> a.id::text)::numeric, 0
            ) AS shared_s
        ) x
        """

VIEWS: list[tuple[str, str]] = [("attempt_costs", ATTEMPT_COSTS)]
# 0009's attempt_costs, as it ran there (VALID written out): downgrade() puts it back.
PREVIOUS: dict[str, str] = {
    "attempt_costs": f"""
        WITH tail AS (
            -- Attempts whose share is not final: busy end after their endpoint's closed_until. The
            -- part of their interval before closed_until is in cost_share_carry.
            -- LATERAL: one range scan of ix_attempts_endpoint_finished_at per endpoint, never a scan
            -- of the whole table (the planner cannot know how few rows are past closed_until).
            SELECT a.id AS attempt_id,
                   m.endpoint,
                   a.finished_at - make_interval(secs => a.busy_s) AS busy_start,
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
        ),
        tail_shares AS (
            SELECT b.attempt_id,
                   c_end.c - c_start.c + coalesce(
                       (SELECT sum(k.part_s) FROM cost_share_carry k WHERE k.attempt_id = b.attempt_id), 0
                   ) AS shared_s
            FROM tail b
            JOIN cumulative c_start ON c_start.endpoint = b.endpoint AND c_start.t = b.lo
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
               CASE WHEN {VALID.format(a="a")}
                    THEN a.finished_at - make_interval(secs => a.busy_s) END AS busy_start,
               CASE WHEN {VALID.format(a="a")} THEN a.finished_at END AS busy_end,
               a.busy_s,
               coalesce(s.shared_s, t.shared_s, 0) AS shared_s,
               a.gpu_count,
               a.usd_per_gpu_hour,
               coalesce(s.shared_s, t.shared_s, 0) * a.gpu_count AS attributed_gpu_seconds,
               coalesce(s.shared_s, t.shared_s, 0) * a.gpu_count * a.usd_per_gpu_hour / 3600 AS cost_usd,
               a.latency_s,
               a.prompt_tokens,
               a.generated_tokens
        FROM attempts a
        JOIN prompts p ON p.id = a.prompt_id
        JOIN jobs j ON j.id = p.job_id
        LEFT JOIN cost_shares s ON s.attempt_id = a.id
        LEFT JOIN tail_shares t ON t.attempt_id = a.id
        """
}


def upgrade() -> None:
    for name, query in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")


def downgrade() -> None:
    for name, _ in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {PREVIOUS[name]}")

"""attempt_costs: the open tail's shares computed once per query, and its carried parts by one join.

0009's `attempt_costs` sweeps the open tail (attempts whose endpoint's time is not closed yet) at
query time. Two parts of it could run once per attempt instead of once per query:

- `tail_shares` was inlined by the planner into the outer join; when it misjudged the outer side as
  one row (a job just written, its models not yet in the table's statistics: a new calibration job
  in a ledger autovacuum has not re-analyzed), it chose a nested loop whose inner side re-ran the
  tail's joins for every attempt of the job: 1,500 prompts x 3 models took 45 s in one query, 9
  models minutes. MATERIALIZED computes it once;
- each tail attempt's carried part was a correlated subquery on `cost_share_carry`, run for every row
  the join above produced (32 million times in that query); it is now one grouped LEFT JOIN.

Same columns, same arithmetic, same numbers (tests/unit/test_cost_shares.py compares the view with
0004's full sweep). The benchmark: `python -m benchmarks.nine_models`.

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0014"
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
        -- MATERIALIZED: once per query, whatever join the planner puts it in (see the docstring).
        tail_shares AS MATERIALIZED (
            SELECT b.attempt_id,
                   c_end.c - c_start.c + coalesce(k.part_s, 0) AS shared_s
            FROM tail b
            JOIN cumulative c_start ON c_start.endpoint = b.endpoint AND c_start.t = b.lo
            JOIN cumulative c_end ON c_end.endpoint = b.endpoint AND c_end.t = b.busy_end
            LEFT JOIN (
                SELECT attempt_id, sum(part_s) AS part_s FROM cost_share_carry GROUP BY attempt_id
            ) k ON k.attempt_id = b.attempt_id
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

"""Stored cost shares: each attempt's attributed busy seconds, computed once its endpoint's time is closed.

Before this revision every cost view re-ran the busy-time sweep over the whole ledger on every query
(16 s for `job_costs` over 1M attempts). Now, per endpoint, `cost_share_marks.closed_until` is an
instant before which no attempt can still land; `herd.ledger.shares.fill` (the workers' pump tick)
sweeps each newly closed slice once and stores:

- `cost_shares`: the final `shared_s` of every attempt whose busy interval ends by `closed_until`;
- `cost_share_carry`: for an attempt still in flight across a cut, its share of the slice before it;
- `cost_share_cuts`: every `closed_until` reached, the points a late arrival rewinds to.

`attempt_costs` reads stored shares and sweeps only the open tail (busy end after `closed_until`),
with the same arithmetic, so it equals 0004's view exactly (tests/unit/test_cost_shares.py).

Cuts are always a busy end of the ledger, never an arbitrary time: a cut inside an elementary segment
would split its `length / n` into two rounded quotients, and the totals would differ in the last digit.

Late arrivals (an attempt inserted, deleted or moved into closed time: a worker whose clock is behind,
a write retried after a database outage, a job deleted) are noted by a statement trigger in
`cost_share_late`; the next fill rewinds that endpoint to a cut before them and sweeps forward again.
The trigger and the fill lock `cost_share_marks` in conflicting modes, so no insert can commit
unseen between a fill's snapshot and its new `closed_until`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = postgresql.TIMESTAMP(timezone=True)

# A busy interval exists only for a positive, finite busy_s (NaN > 0 is true in Postgres; NaN is also
# greater than infinity, so the upper bound keeps it out): the rule of 0003's attempt_busy.
VALID = "{a}.endpoint IS NOT NULL AND {a}.busy_s > 0 AND {a}.busy_s < 'Infinity'"

NOTE_LATE = f"""
CREATE OR REPLACE FUNCTION cost_shares_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Conflicts with the fill's EXCLUSIVE lock: a fill waits for this transaction, or this
    -- statement waits for the fill and then compares against its new closed_until.
    LOCK TABLE cost_share_marks IN ROW EXCLUSIVE MODE;
    INSERT INTO cost_share_marks (endpoint)
    SELECT DISTINCT c.endpoint FROM changed c WHERE {VALID.format(a="c")}
    ON CONFLICT (endpoint) DO NOTHING;
    INSERT INTO cost_share_late (endpoint, busy_start, busy_s)
    SELECT c.endpoint, c.finished_at - make_interval(secs => c.busy_s), c.busy_s
    FROM changed c
    JOIN cost_share_marks m ON m.endpoint = c.endpoint
    WHERE {VALID.format(a="c")}
      AND c.finished_at - make_interval(secs => c.busy_s) < m.closed_until;
    RETURN NULL;
END
$$
"""

TRIGGERS = [
    ("cost_shares_insert", "AFTER INSERT ON attempts REFERENCING NEW TABLE AS changed"),
    ("cost_shares_delete", "AFTER DELETE ON attempts REFERENCING OLD TABLE AS changed"),
    # An update can move an interval out of closed time (old rows) or into it (new rows). Column lists
    # are not allowed with transition tables, so these fire on every UPDATE statement; the herd's own
    # updates (escalated) touch one row and find nothing to note.
    ("cost_shares_update_old", "AFTER UPDATE ON attempts REFERENCING OLD TABLE AS changed"),
    ("cost_shares_update_new", "AFTER UPDATE ON attempts REFERENCING NEW TABLE AS changed"),
]

# 0004's attempt_costs with its `shares` from stored rows plus a sweep of the open tail only.
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

VIEWS: list[tuple[str, str]] = [("attempt_costs", ATTEMPT_COSTS)]

# 0004's attempt_costs, which sweeps the whole ledger per query: downgrade() puts it back.
PREVIOUS: dict[str, str] = {
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
}


def upgrade() -> None:
    op.create_table(
        "cost_share_marks",
        sa.Column("endpoint", sa.Text(), primary_key=True),
        # '-infinity' until the first fill: every attempt of the endpoint is in the open tail.
        sa.Column("closed_until", TS, server_default=sa.text("'-infinity'"), nullable=False),
        # The longest busy_s the fills have seen here (seconds): how far back a late arrival rewinds.
        sa.Column("max_busy_s", sa.Float(), server_default="0", nullable=False),
    )
    op.create_table(
        "cost_share_cuts",
        sa.Column("endpoint", sa.Text(), primary_key=True),
        sa.Column("cut", TS, primary_key=True),
    )
    op.create_table(
        "cost_shares",
        sa.Column("attempt_id", sa.BigInteger(), primary_key=True),
        sa.Column("shared_s", sa.Numeric(), nullable=False),  # seconds, the sweep's exact numeric
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name="fk_cost_shares_attempt_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "cost_share_carry",
        sa.Column("attempt_id", sa.BigInteger(), primary_key=True),
        sa.Column("cut", TS, primary_key=True),  # the start of the slice this part covers
        sa.Column("part_s", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name="fk_cost_share_carry_attempt_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "cost_share_late",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("busy_start", TS, nullable=False),
        sa.Column("busy_s", sa.Float(), nullable=False),
    )
    op.execute(
        f"""INSERT INTO cost_share_marks (endpoint)
            SELECT DISTINCT a.endpoint FROM attempts a WHERE {VALID.format(a="a")}"""
    )
    op.execute(NOTE_LATE)
    for name, clause in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {clause} FOR EACH STATEMENT EXECUTE FUNCTION cost_shares_note()")
    for name, query in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")


def downgrade() -> None:
    for name, _ in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {PREVIOUS[name]}")
    for name, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON attempts")
    op.execute("DROP FUNCTION IF EXISTS cost_shares_note()")
    for table in (
        "cost_share_late",
        "cost_share_carry",
        "cost_shares",
        "cost_share_cuts",
        "cost_share_marks",
    ):
        op.drop_table(table)

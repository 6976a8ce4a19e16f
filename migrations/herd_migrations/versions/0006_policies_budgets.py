"""Policy versions, calibration jobs, job budgets, and the per-version report view (issue 8).

- `jobs.kind`: 'live' (the cascade decides) or 'calibration' (every model on the task's route answers
  every prompt); `jobs.budget_usd`: a cap on the job's attributed cost (NULL: none).
- `prompts.policy_version`: the policy version that decided the prompt (NULL: the herd file);
  `prompts.note`: 'budget' when an answer was kept because the budget ran out; `prompts.held_confidence`
  and state 'held': an escalation candidate of a budget job waiting for the release
  (herd/policy/job_budget.py).
- `policies`: every chosen policy as its YAML text, per task a version 1, 2, ...;
  `active_policies`: per task, the version the workers run (rollback = point at an earlier one).
- View `policy_version_quality`: per job, policy version and scorer, the final answers' quality and
  attributed cost, so `herd report` groups by the version that decided each prompt.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATES_OLD = "state IN ('pending', 'queued', 'done', 'failed')"
STATES_NEW = "state IN ('pending', 'queued', 'held', 'done', 'failed')"

VIEWS: list[tuple[str, str]] = [
    (
        # One row per job, policy version (NULL: the herd file decided) and scorer of the final answer
        # (NULL: unscored prompts). Cost is every attempt of the prompt, attributed as in attempt_costs.
        "policy_version_quality",
        """
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
    ),
]


def upgrade() -> None:
    op.add_column("jobs", sa.Column("kind", sa.Text(), server_default="live", nullable=False))
    op.add_column("jobs", sa.Column("budget_usd", sa.Numeric(18, 10)))
    op.create_check_constraint("ck_jobs_kind", "jobs", "kind IN ('live', 'calibration')")
    op.add_column("prompts", sa.Column("policy_version", sa.Integer()))
    op.add_column("prompts", sa.Column("note", sa.Text()))
    op.add_column("prompts", sa.Column("held_confidence", sa.Float()))
    op.drop_constraint("ck_prompts_state", "prompts", type_="check")
    op.create_check_constraint("ck_prompts_state", "prompts", STATES_NEW)
    op.create_index("ix_prompts_held", "prompts", ["job_id"], postgresql_where=sa.text("state = 'held'"))
    op.create_table(
        "policies",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source_job_id", sa.BigInteger()),
        sa.Column("estimates", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column(
            "created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
        sa.ForeignKeyConstraint(
            ["source_job_id"], ["jobs.id"], name="fk_policies_source_job_id", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("task", "version", name="uq_policies_task"),
    )
    op.create_table(
        "active_policies",
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "activated_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("task", name="pk_active_policies"),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["policies.id"], name="fk_active_policies_policy_id", ondelete="CASCADE"
        ),
    )
    for name, query in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")


def downgrade() -> None:
    for name, _ in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("active_policies")
    op.drop_table("policies")
    op.drop_index("ix_prompts_held", table_name="prompts")
    op.execute("DELETE FROM prompts WHERE state = 'held'")
    op.drop_constraint("ck_prompts_state", "prompts", type_="check")
    op.create_check_constraint("ck_prompts_state", "prompts", STATES_OLD)
    op.drop_column("prompts", "held_confidence")
    op.drop_column("prompts", "note")
    op.drop_column("prompts", "policy_version")
    op.drop_constraint("ck_jobs_kind", "jobs", type_="check")
    op.drop_column("jobs", "budget_usd")
    op.drop_column("jobs", "kind")

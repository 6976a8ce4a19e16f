"""Refinement steps on prompts, prices on attempts, quality scores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prompts", sa.Column("stage", sa.Text(), server_default="answer", nullable=False))
    op.add_column("prompts", sa.Column("round", sa.Integer(), server_default="0", nullable=False))
    # Cost is derived from busy seconds and the price in force, in the cost views (0003).
    op.drop_column("attempts", "cost_usd")
    op.add_column("attempts", sa.Column("gpu_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "attempts", sa.Column("usd_per_gpu_hour", sa.Numeric(12, 6), server_default="0", nullable=False)
    )
    op.create_check_constraint("ck_attempts_stage", "attempts", "stage IN ('answer', 'critique', 'refine')")
    op.create_index("ix_attempts_endpoint_finished_at", "attempts", ["endpoint", "finished_at"])
    op.create_table(
        "scores",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("attempt_id", sa.BigInteger(), nullable=False),
        sa.Column("scorer", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("raw", sa.Text()),
        sa.Column("judge_model", sa.Text()),
        sa.Column(
            "created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_scores"),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name="fk_scores_attempt_id", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("attempt_id", "scorer", name="uq_scores_attempt_id_scorer"),
        sa.CheckConstraint("score >= 0 AND score <= 1", name="ck_scores_score_range"),
    )


def downgrade() -> None:
    op.drop_table("scores")
    op.drop_index("ix_attempts_endpoint_finished_at", table_name="attempts")
    op.drop_constraint("ck_attempts_stage", "attempts", type_="check")
    op.drop_column("attempts", "usd_per_gpu_hour")
    op.drop_column("attempts", "gpu_count")
    op.add_column("attempts", sa.Column("cost_usd", sa.Numeric(18, 10)))
    op.drop_column("prompts", "round")
    op.drop_column("prompts", "stage")

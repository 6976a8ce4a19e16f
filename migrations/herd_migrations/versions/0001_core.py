"""Core ledger: jobs, prompts, attempts, finals.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("entry_model", sa.Text(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("doc_key", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text()),
        sa.Column("fields", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("enqueued_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompts"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_prompts_job_id", ondelete="CASCADE"),
        sa.UniqueConstraint("job_id", "doc_key", name="uq_prompts_job_id_doc_key"),
        sa.CheckConstraint("state IN ('pending', 'queued', 'done', 'failed')", name="ck_prompts_state"),
    )
    op.create_index("ix_prompts_job_id_state", "prompts", ["job_id", "state"])
    op.create_index("ix_prompts_pending", "prompts", ["id"], postgresql_where=sa.text("state = 'pending'"))
    op.create_index(
        "ix_prompts_queued", "prompts", ["enqueued_at"], postgresql_where=sa.text("state = 'queued'")
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("round", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text()),
        sa.Column("prompt_tokens", sa.Integer()),
        sa.Column("generated_tokens", sa.Integer()),
        sa.Column("first_token_margin", sa.Float()),
        sa.Column("mean_entropy", sa.Float()),
        sa.Column("max_entropy", sa.Float()),
        sa.Column("mean_nll", sa.Float()),
        sa.Column("escalated", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("retries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("endpoint", sa.Text()),
        sa.Column("latency_s", sa.Float()),
        sa.Column("queue_s", sa.Float()),
        sa.Column("inference_s", sa.Float()),
        sa.Column("compute_s", sa.Float()),
        sa.Column("gpu_seconds", sa.Float()),
        sa.Column("cost_usd", sa.Numeric(18, 10)),
        sa.Column("error", sa.Text()),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name="fk_attempts_prompt_id", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("prompt_id", "model", "stage", "round", name="uq_attempts_step"),
        sa.CheckConstraint("status IN ('ok', 'error')", name="ck_attempts_status"),
    )
    op.create_index("ix_attempts_model", "attempts", ["model"])
    op.create_table(
        "finals",
        sa.Column("prompt_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("prompt_id", name="pk_finals"),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name="fk_finals_prompt_id", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name="fk_finals_attempt_id", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("attempt_id", name="uq_finals_attempt_id"),
    )


def downgrade() -> None:
    op.drop_table("finals")
    op.drop_table("attempts")
    op.drop_table("prompts")
    op.drop_table("jobs")

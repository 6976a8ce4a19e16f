"""The OpenAI Batch API: API keys, files, batches; direct jobs; the logprobs a caller asked for.

- `api_keys`: bearer keys as the SHA-256 of the token, with their owner and a display prefix.
- `api_files` + `api_file_chunks`: uploaded batch input files and the output/error files Herd writes
  from the ledger, their bytes in chunks of at most 1 MiB.
- `api_batches`: one row per batch, its status and timestamps; its job is the `jobs` row of the same
  name.
- `jobs.kind` 'direct': one model answers alone (a batch whose `model` names a model of the herd).
- `attempts.logprobs`: the token logprobs an OpenAI request's caller asked for, in OpenAI's shape;
  NULL for every other attempt.

Workers of the previous revision keep running: they never write the new column (NULL) and never
meet a direct job unless a batch API server submitted one.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TS = postgresql.TIMESTAMP(timezone=True)
KINDS_NEW = "kind IN ('live', 'calibration', 'direct')"
KINDS_OLD = "kind IN ('live', 'calibration')"
STATUSES = (
    "status IN ('validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', "
    "'cancelling', 'cancelled')"
)
ACTIVE = "status IN ('validating', 'in_progress', 'finalizing', 'cancelling')"

# A revision is a frozen snapshot: every statement it executes is written out in this file. This one
# adds tables, a column and a check constraint, and no view, function or trigger: current.sql only
# names its revision.


def upgrade() -> None:
    op.drop_constraint("ck_jobs_kind", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_kind", "jobs", KINDS_NEW)
    op.add_column("attempts", sa.Column("logprobs", postgresql.JSONB()))
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("sha256", name="uq_api_keys_sha256"),
    )
    op.create_table(
        "api_files",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_files"),
        sa.UniqueConstraint("seq", name="uq_api_files_seq"),
        sa.CheckConstraint("purpose IN ('batch', 'batch_output')", name="ck_api_files_purpose"),
    )
    op.create_index("ix_api_files_owner_seq", "api_files", ["owner", "seq"])
    op.create_table(
        "api_file_chunks",
        sa.Column("file_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "seq", name="pk_api_file_chunks"),
        sa.ForeignKeyConstraint(
            ["file_id"], ["api_files.id"], name="fk_api_file_chunks_file_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "api_batches",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("input_file_id", sa.Text(), nullable=False),
        sa.Column("completion_window", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="validating", nullable=False),
        sa.Column("output_file_id", sa.Text()),
        sa.Column("error_file_id", sa.Text()),
        sa.Column("errors", postgresql.JSONB()),
        sa.Column("metadata", postgresql.JSONB()),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("in_progress_at", TS),
        sa.Column("finalizing_at", TS),
        sa.Column("completed_at", TS),
        sa.Column("failed_at", TS),
        sa.Column("expired_at", TS),
        sa.Column("cancelling_at", TS),
        sa.Column("cancelled_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_api_batches"),
        sa.UniqueConstraint("seq", name="uq_api_batches_seq"),
        sa.CheckConstraint(STATUSES, name="ck_api_batches_status"),
    )
    op.create_index("ix_api_batches_owner_seq", "api_batches", ["owner", "seq"])
    op.create_index("ix_api_batches_active", "api_batches", ["status"], postgresql_where=sa.text(ACTIVE))


def downgrade() -> None:
    op.drop_index("ix_api_batches_active", table_name="api_batches")
    op.drop_index("ix_api_batches_owner_seq", table_name="api_batches")
    op.drop_table("api_batches")
    op.drop_table("api_file_chunks")
    op.drop_index("ix_api_files_owner_seq", table_name="api_files")
    op.drop_table("api_files")
    op.drop_table("api_keys")
    op.drop_column("attempts", "logprobs")
    op.execute("DELETE FROM jobs WHERE kind = 'direct'")
    op.drop_constraint("ck_jobs_kind", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_kind", "jobs", KINDS_OLD)

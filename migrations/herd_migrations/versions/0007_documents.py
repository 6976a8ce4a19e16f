"""Document sets (issue 11): skipped files, chunk prompts, truncation on attempts, the combine stage.

- `skipped_files`: files `herd submit --skip-unreadable` could not read, per job, with the reason;
  `herd status` and `herd export` list them.
- `prompts.parent_id`, `prompts.chunk_index`: a chunk of a long document is a prompt of its own (so
  it goes through the normal pipeline, with its own attempts and idempotency) whose parent is the
  document's prompt (herd/cascade/chunks.py).
- `attempts.dropped_tokens`: tokens of the document left out to fit the model's context (truncate).
- `attempts.stage` may be 'combine': the step that merges a chunked document's chunk answers.
- View `document_costs`: per document (a prompt without a parent), its attempts' attributed cost plus
  its chunks' (a chunked document's cost is the sum of its chunk attempts and its combine step).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STAGES_OLD = "stage IN ('answer', 'critique', 'refine')"
STAGES_NEW = "stage IN ('answer', 'critique', 'refine', 'combine')"

DOCUMENT_COSTS = """
    SELECT coalesce(p.parent_id, p.id) AS prompt_id,
           count(*) AS attempts,
           count(*) FILTER (WHERE p.parent_id IS NOT NULL) AS chunk_attempts,
           coalesce(sum(ac.cost_usd), 0) AS cost_usd
    FROM attempt_costs ac
    JOIN prompts p ON p.id = ac.prompt_id
    GROUP BY coalesce(p.parent_id, p.id)
"""


def upgrade() -> None:
    op.create_table(
        "skipped_files",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("doc_key", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("job_id", "doc_key", name="pk_skipped_files"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_skipped_files_job_id", ondelete="CASCADE"),
    )
    op.add_column("prompts", sa.Column("parent_id", sa.BigInteger()))
    op.add_column("prompts", sa.Column("chunk_index", sa.Integer()))
    op.create_foreign_key(
        "fk_prompts_parent_id", "prompts", "prompts", ["parent_id"], ["id"], ondelete="CASCADE"
    )
    op.create_index(
        "ix_prompts_parent_id", "prompts", ["parent_id"], postgresql_where=sa.text("parent_id IS NOT NULL")
    )
    op.add_column("attempts", sa.Column("dropped_tokens", sa.Integer()))
    op.drop_constraint("ck_attempts_stage", "attempts", type_="check")
    op.create_check_constraint("ck_attempts_stage", "attempts", STAGES_NEW)
    op.execute(f"CREATE OR REPLACE VIEW document_costs AS {DOCUMENT_COSTS}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS document_costs")
    op.execute("DELETE FROM attempts WHERE stage = 'combine'")
    op.drop_constraint("ck_attempts_stage", "attempts", type_="check")
    op.create_check_constraint("ck_attempts_stage", "attempts", STAGES_OLD)
    op.drop_column("attempts", "dropped_tokens")
    op.execute("DELETE FROM prompts WHERE parent_id IS NOT NULL")
    op.drop_index("ix_prompts_parent_id", table_name="prompts")
    op.drop_constraint("fk_prompts_parent_id", "prompts", type_="foreignkey")
    op.drop_column("prompts", "chunk_index")
    op.drop_column("prompts", "parent_id")
    op.drop_table("skipped_files")

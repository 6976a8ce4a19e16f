"""Router versions and per-prompt routing (issue 10).

- `routers`: every trained router as its JSON text (herd.policy.router.model.Router.to_json: plain
  numbers, never pickle), per task a version 1, 2, ...; `encoder` names its features ("tfidf",
  "tfidf-char" or the sentence encoder); `figures`: the held-out figures `herd router train` printed.
- `active_routers`: per task, the version `herd submit` routes with (none: every prompt enters at the
  policy's or herd file's entry model, as before).
- `prompts.router_version`: the router version that chose the prompt's entry model (NULL: no router);
  `prompts.router_p_good`: its predicted P(good answer) per model, {"model": p, ...}. Columns rather
  than a side table: they are written by the same INSERT ... SELECT that creates the prompt (no second
  pass over a million rows, no join to read them back), and nullable columns without a default cost
  nothing to add to a large table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routers",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.Column("encoder", sa.Text(), nullable=False),
        sa.Column("source_job_id", sa.BigInteger()),
        sa.Column("figures", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column(
            "created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_routers"),
        sa.ForeignKeyConstraint(
            ["source_job_id"], ["jobs.id"], name="fk_routers_source_job_id", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("task", "version", name="uq_routers_task"),
    )
    op.create_table(
        "active_routers",
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("router_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "activated_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("task", name="pk_active_routers"),
        sa.ForeignKeyConstraint(
            ["router_id"], ["routers.id"], name="fk_active_routers_router_id", ondelete="CASCADE"
        ),
    )
    op.add_column("prompts", sa.Column("router_version", sa.Integer()))
    op.add_column("prompts", sa.Column("router_p_good", postgresql.JSONB()))


def downgrade() -> None:
    op.drop_column("prompts", "router_p_good")
    op.drop_column("prompts", "router_version")
    op.drop_table("active_routers")
    op.drop_table("routers")

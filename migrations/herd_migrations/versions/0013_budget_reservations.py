"""Budget reservations: the estimated cost of each escalation a budget job has released and not yet
reconciled with its actual cost (herd/policy/job_budget.py).

`prompts.reserved_usd`: set when a held candidate is released to its next model, in the transaction
that releases it (under the job's advisory lock); cleared once the prompt has left that model's work
(done, failed or held again), when its actual cost is in `attempt_costs`. A release counts the job's
actual cost plus its outstanding reservations against the budget, so concurrent workers never
release more than the budget together.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prompts", sa.Column("reserved_usd", sa.Numeric(18, 10)))
    op.create_index(
        "ix_prompts_reserved", "prompts", ["job_id"], postgresql_where=sa.text("reserved_usd IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_prompts_reserved", table_name="prompts")
    op.drop_column("prompts", "reserved_usd")

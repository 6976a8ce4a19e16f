"""The server's finish reason on each attempt, so an answer cut off at max_new_tokens is visible.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("finish_reason", sa.Text()))


def downgrade() -> None:
    op.drop_column("attempts", "finish_reason")

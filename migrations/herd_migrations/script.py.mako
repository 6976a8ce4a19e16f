"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

# A revision is a frozen snapshot: every statement it executes is written out in this file. Never
# import another revision or build SQL from its text (a later edit there would change what this one
# runs). For downgrade(), copy the definitions this revision replaces, from the revision that made
# them or from migrations/herd_migrations/current.sql. A view, function or trigger changed? Regenerate
# current.sql (`make sql`); CI fails while it is stale.


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}

"""attempts.gpu_seconds -> attempts.busy_s, and the views that read it replaced.

The column always held the seconds a request kept its endpoint busy, before sharing among the
requests in flight and before multiplying by the endpoint's GPU count (docs/cost-model.md); its
name said GPU-seconds, which a reader of the SQL took for the charged quantity. The views keep
their public columns (`busy_s` and `attributed_gpu_seconds` were already named correctly).

The view SQL is revision 0003's with the column renamed: 0003 is immutable once released, so
reading it here keeps this revision meaning what it meant when it ran.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_V3 = importlib.import_module("herd_migrations.versions.0003_reporting_views")
OLD, NEW = "a.gpu_seconds", "a.busy_s"
VIEWS: list[tuple[str, str]] = [(name, query.replace(OLD, NEW)) for name, query in _V3.VIEWS]


def upgrade() -> None:
    # Postgres follows a renamed column inside existing views; replacing them as well keeps each
    # view's stored text equal to its source here, so `\d+ attempt_costs` reads like the code.
    op.alter_column("attempts", "gpu_seconds", new_column_name="busy_s")
    for name, query in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")


def downgrade() -> None:
    op.alter_column("attempts", "busy_s", new_column_name="gpu_seconds")
    for name, query in _V3.VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")

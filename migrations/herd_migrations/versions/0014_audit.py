"""The nightly audit: a live job's audited prompts, answered again by a reference model alone.

- `jobs.kind` 'audit': one model (the reference) answers alone, no cascade, as in a direct job. An
  audit job holds the seeded sample of another job's prompts (same document ids, text, reference);
  its attempts are the audit's cost, apart from the audited job's own.
- `jobs.audit_of`: the job an audit job audits (at most one audit job per job); NULL otherwise.
- `jobs.audit_rate`: the share of the audited job's prompts the audit samples, in (0, 1].

Workers of the previous revision keep running: they never meet an audit job unless a new `herd
submit --audit` made one, and an audit prompt they did meet would be run as a live one-model job.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

KINDS_NEW = "kind IN ('live', 'calibration', 'direct', 'audit')"
KINDS_OLD = "kind IN ('live', 'calibration', 'direct')"
RATE = "audit_rate IS NULL OR (audit_rate > 0 AND audit_rate <= 1)"

# A revision is a frozen snapshot: every statement it executes is written out in this file. This one
# adds columns and check constraints, and no view, function or trigger: current.sql only names its
# revision.


def upgrade() -> None:
    op.drop_constraint("ck_jobs_kind", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_kind", "jobs", KINDS_NEW)
    op.add_column("jobs", sa.Column("audit_of", sa.BigInteger()))
    op.add_column("jobs", sa.Column("audit_rate", sa.Float()))
    op.create_foreign_key("fk_jobs_audit_of", "jobs", "jobs", ["audit_of"], ["id"], ondelete="CASCADE")
    op.create_unique_constraint("uq_jobs_audit_of", "jobs", ["audit_of"])
    op.create_check_constraint("ck_jobs_audit_rate", "jobs", RATE)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'audit'")
    op.drop_constraint("ck_jobs_audit_rate", "jobs", type_="check")
    op.drop_constraint("uq_jobs_audit_of", "jobs", type_="unique")
    op.drop_constraint("fk_jobs_audit_of", "jobs", type_="foreignkey")
    op.drop_column("jobs", "audit_rate")
    op.drop_column("jobs", "audit_of")
    op.drop_constraint("ck_jobs_kind", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_kind", "jobs", KINDS_OLD)

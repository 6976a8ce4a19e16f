"""A stored cost share follows its attempt only when the attempt's prompt, model, GPU count or price changes.

0017 kept a share's `job_id`, `model`, `gpu_s` and `cost_usd` in step with its attempt through a
statement-level trigger with a transition table (`cost_share_attempts_sync`). PostgreSQL allows no
column list (`UPDATE OF ...`) on a trigger with a transition table, so it ran on every UPDATE of
`attempts`, among them the hot path's `mark_escalated` (one per escalation): a plpgsql call and an
UPDATE ... FROM join of cost_shares for nothing.

This revision splits it in two triggers that carry the column list, so an UPDATE that sets none of
those columns (`escalated`, `status`, ...) queues neither:

- `cost_share_resync_mark`, `AFTER UPDATE OF prompt_id, model, gpu_count, usd_per_gpu_hour ... FOR
  EACH ROW WHEN (those columns are distinct)`: notes the attempt in `cost_share_resync` (an UPDATE
  that sets them to the values they had is filtered by the WHEN without a call);
- `cost_share_attempt_sync`, `AFTER UPDATE OF the same columns FOR EACH STATEMENT` (no transition
  table, so a column list is allowed): takes the statement's noted attempts out of `cost_share_resync`
  and updates their shares in one UPDATE, as 0017 did from its transition table. A statement's row
  events fire before its statement events, so the notes are there; rows another transaction notes
  are invisible to it until that one commits, and it has deleted them by then.

A row trigger alone (updating each share where its attempt changed) was measured first: the same for
an escalation, but a repricing of 5,000 attempts took 3.7 s against 0017's 0.42 s, since each share's
UPDATE fires cost_shares' statement triggers on the running totals (0017) once more. With the note and
one sync per statement, 5,000 took 0.30 s against 0.36 s; a repricing of all 50,000 attempts of the
benchmark's ledger still pays one trigger call and one insert per attempt, 12.9 s against 8.3 s (and
5.2 s against 9.9 s in another run; a loaded 2-core machine). benchmarks/escalation_trigger.py
measures both sides. `usd_per_gpu_hour` is `numeric(12, 6)`, so two
equal prices have the same scale, and the WHEN misses no change of a cost's scale.

0009's `cost_shares_update_old` and `cost_shares_update_new` (statement triggers with transition
tables, `cost_shares_note()`) still fire on `mark_escalated`, and stay: besides noting late arrivals
they unseal the changed attempts' jobs (0010), and a sealed job's `cost_rollups` row holds its
`escalations`, so an attempt marked escalated after its job was sealed must unseal it. Which columns
feed the rollup is nearly all of them, so no column list would spare an escalation.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# The columns a stored share's totals columns derive from (0017's GPU_S and COST, and the job through
# the prompt).
COLUMNS = ("prompt_id", "model", "gpu_count", "usd_per_gpu_hour")
_OLD = ", ".join(f"OLD.{c}" for c in COLUMNS)
_NEW = ", ".join(f"NEW.{c}" for c in COLUMNS)

# An attempt whose share must follow it, for the statement trigger below.
RESYNC_MARK = """
CREATE OR REPLACE FUNCTION cost_share_resync_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cost_share_resync (attempt_id) VALUES (NEW.id);
    RETURN NULL;
END
$$
"""

# The noted attempts' shares follow them (and so the totals, through cost_shares' statement triggers),
# 0017's UPDATE with the attempts read back instead of taken from a transition table.
ATTEMPT_SYNC = """
CREATE OR REPLACE FUNCTION cost_share_attempt_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS (DELETE FROM cost_share_resync RETURNING attempt_id)
    UPDATE cost_shares s
    SET job_id = p.job_id, model = a.model, gpu_s = s.shared_s * a.gpu_count,
        cost_usd = s.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600
    FROM attempts a
    JOIN prompts p ON p.id = a.prompt_id
    WHERE a.id IN (SELECT attempt_id FROM changed) AND s.attempt_id = a.id
      AND (s.job_id, s.model, s.gpu_s, s.cost_usd) IS DISTINCT FROM
          (p.job_id, a.model, s.shared_s * a.gpu_count, s.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600);
    RETURN NULL;
END
$$
"""

_OF = f"AFTER UPDATE OF {', '.join(COLUMNS)} ON attempts"
TRIGGERS = [
    (
        "cost_share_resync_mark",
        f"{_OF} FOR EACH ROW WHEN (({_OLD}) IS DISTINCT FROM ({_NEW}))",
        "cost_share_resync_mark()",
    ),
    ("cost_share_attempt_sync", f"{_OF} FOR EACH STATEMENT", "cost_share_attempt_sync()"),
]

# 0017's statement-level function and trigger, as 0017 created them: downgrade() puts them back.
PREVIOUS_ATTEMPTS_SYNC = """
CREATE OR REPLACE FUNCTION cost_share_attempts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cost_shares s
    SET job_id = p.job_id, model = c.model, gpu_s = s.shared_s * c.gpu_count,
        cost_usd = s.shared_s * c.gpu_count * c.usd_per_gpu_hour / 3600
    FROM changed c
    JOIN prompts p ON p.id = c.prompt_id
    WHERE s.attempt_id = c.id
      AND (s.job_id, s.model, s.gpu_s, s.cost_usd) IS DISTINCT FROM
          (p.job_id, c.model, s.shared_s * c.gpu_count, s.shared_s * c.gpu_count * c.usd_per_gpu_hour / 3600);
    RETURN NULL;
END
$$
"""

PREVIOUS_TRIGGER = (
    "CREATE TRIGGER cost_share_attempts_sync AFTER UPDATE ON attempts "
    "REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION cost_share_attempts_sync()"
)


def upgrade() -> None:
    # Nothing to backfill: both revisions keep the same rows in step, so the shares are already so.
    op.execute("DROP TRIGGER IF EXISTS cost_share_attempts_sync ON attempts")
    op.execute("DROP FUNCTION IF EXISTS cost_share_attempts_sync()")
    # UNLOGGED: its rows never outlive the statement that writes them (a crash empties it, as it is).
    op.create_table(
        "cost_share_resync", sa.Column("attempt_id", sa.BigInteger(), nullable=False), prefixes=["UNLOGGED"]
    )
    op.execute(RESYNC_MARK)
    op.execute(ATTEMPT_SYNC)
    for name, clause, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {clause} EXECUTE FUNCTION {function}")


def downgrade() -> None:
    for name, _, function in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON attempts")
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.drop_table("cost_share_resync")
    op.execute(PREVIOUS_ATTEMPTS_SYNC)
    op.execute(PREVIOUS_TRIGGER)

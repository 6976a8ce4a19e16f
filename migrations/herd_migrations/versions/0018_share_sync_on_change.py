"""A stored cost share follows its attempt only when the attempt's prompt, model, GPU count or price changes.

0017 kept a share's `job_id`, `model`, `gpu_s` and `cost_usd` in step with its attempt through a
statement-level trigger with a transition table (`cost_share_attempts_sync`). PostgreSQL allows no
column list (`UPDATE OF ...`) on a trigger with a transition table, so it ran on every UPDATE of
`attempts`, among them the hot path's `mark_escalated` (one per escalation): a plpgsql call and an
UPDATE ... FROM join of cost_shares for nothing.

This revision replaces it with a row-level trigger, `cost_share_attempt_sync`,
`AFTER UPDATE OF prompt_id, model, gpu_count, usd_per_gpu_hour ... FOR EACH ROW WHEN (those columns
are distinct)`: an UPDATE that sets none of them (`escalated`, `status`, ...) does not queue it at
all, and one that sets them to the same values is filtered by the WHEN without calling a function.
Its function updates the one share of the one attempt. `usd_per_gpu_hour` is `numeric(12, 6)`, so two
equal prices have the same scale, and the WHEN misses no change of a cost's scale.

The cost of the row level: an UPDATE that really changes these columns on many attempts (a repricing)
runs one single-row UPDATE of cost_shares per attempt, and each fires cost_shares' statement triggers
on the running totals (0017), where 0017 ran one set-based UPDATE. Such an UPDATE is a correction by
hand, not the herd's work; benchmarks/escalation_trigger.py measures both sides.

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

# The share of attempt NEW follows it (and so the totals, through cost_shares' statement triggers).
ATTEMPT_SYNC = """
CREATE OR REPLACE FUNCTION cost_share_attempt_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cost_shares s
    SET job_id = p.job_id, model = NEW.model, gpu_s = s.shared_s * NEW.gpu_count,
        cost_usd = s.shared_s * NEW.gpu_count * NEW.usd_per_gpu_hour / 3600
    FROM prompts p
    WHERE s.attempt_id = NEW.id AND p.id = NEW.prompt_id
      AND (s.job_id, s.model, s.gpu_s, s.cost_usd) IS DISTINCT FROM
          (p.job_id, NEW.model, s.shared_s * NEW.gpu_count,
           s.shared_s * NEW.gpu_count * NEW.usd_per_gpu_hour / 3600);
    RETURN NULL;
END
$$
"""

TRIGGER = (
    f"CREATE TRIGGER cost_share_attempt_sync AFTER UPDATE OF {', '.join(COLUMNS)} ON attempts "
    f"FOR EACH ROW WHEN (({_OLD}) IS DISTINCT FROM ({_NEW})) "
    "EXECUTE FUNCTION cost_share_attempt_sync()"
)

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
    # Nothing to backfill: both triggers keep the same rows in step, so the shares are already so.
    op.execute("DROP TRIGGER IF EXISTS cost_share_attempts_sync ON attempts")
    op.execute("DROP FUNCTION IF EXISTS cost_share_attempts_sync()")
    op.execute(ATTEMPT_SYNC)
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS cost_share_attempt_sync ON attempts")
    op.execute("DROP FUNCTION IF EXISTS cost_share_attempt_sync()")
    op.execute(PREVIOUS_ATTEMPTS_SYNC)
    op.execute(PREVIOUS_TRIGGER)

"""The ledger's tables, declared once for Alembic (`alembic check` compares them to the migrations).

Runtime code talks SQL through psycopg; this module is the schema's single written description.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)

TS = TIMESTAMP(timezone=True)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("task", Text, nullable=False),
    Column("entry_model", Text, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    # live: the cascade decides; calibration: every model of the route answers every prompt (0005).
    Column("kind", Text, nullable=False, server_default="live"),
    # Cap on the job's attributed cost; escalations wait as 'held' candidates (herd/policy/job_budget.py).
    Column("budget_usd", Numeric(18, 10)),
    # direct: one model answers alone, no cascade (an OpenAI batch naming a model; 0012). audit: the
    # reference model alone on a seeded sample of the job `audit_of` (herd/quality/audit.py; 0014).
    Column("audit_of", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), unique=True),
    Column("audit_rate", Float),
    CheckConstraint("kind IN ('live', 'calibration', 'direct', 'audit')", name="kind"),
    CheckConstraint("audit_rate IS NULL OR (audit_rate > 0 AND audit_rate <= 1)", name="audit_rate"),
)

prompts = Table(
    "prompts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("job_id", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("doc_key", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("reference", Text),
    Column("fields", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("content_hash", Text, nullable=False),
    # pending: only in Postgres; queued: a message is in (or on its way to) `model`'s queue.
    Column("state", Text, nullable=False, server_default="pending"),
    # The step the prompt is at: its model, and the stage/round within that model (refinement).
    Column("model", Text, nullable=False),
    Column("stage", Text, nullable=False, server_default="answer"),
    Column("round", Integer, nullable=False, server_default="0"),
    Column("enqueued_at", TS),
    Column("finished_at", TS),
    Column("error", Text),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    # The policy version that decided the prompt; NULL when the herd file did (0005).
    Column("policy_version", Integer),
    # 'budget': the entry answer was kept because the job's budget ran out.
    Column("note", Text),
    # A held escalation candidate's confidence (lower: escalated first when the budget is released).
    Column("held_confidence", Float),
    # A released escalation's estimated cost, USD, until reconciled with its actual cost (0013).
    Column("reserved_usd", Numeric(18, 10)),
    # A chunk of a long document: its document's prompt, and its place in it (0007, herd/cascade/chunks.py).
    Column("parent_id", BigInteger, ForeignKey("prompts.id", ondelete="CASCADE")),
    Column("chunk_index", Integer),
    # The router version that chose `model` as the entry, and its P(good) per model (0008); NULL: none.
    Column("router_version", Integer),
    Column("router_p_good", JSONB),
    UniqueConstraint("job_id", "doc_key", name="uq_prompts_job_id_doc_key"),
    CheckConstraint("state IN ('pending', 'queued', 'held', 'done', 'failed')", name="state"),
    Index("ix_prompts_job_id_state", "job_id", "state"),
    # One job's prompt id span, O(log n) (migration 0010: job-scoped views read attempts by that range).
    Index("ix_prompts_job_id_id", "job_id", "id"),
    # The dispatcher scans these two small slices of a possibly huge table.
    Index("ix_prompts_pending", "id", postgresql_where=text("state = 'pending'")),
    Index("ix_prompts_queued", "enqueued_at", postgresql_where=text("state = 'queued'")),
    Index("ix_prompts_held", "job_id", postgresql_where=text("state = 'held'")),
    Index("ix_prompts_reserved", "job_id", postgresql_where=text("reserved_usd IS NOT NULL")),
    Index("ix_prompts_parent_id", "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
    # Whether a router chose any of a job's prompts, without reading them all (0019: perfics_inputs).
    Index("ix_prompts_routed", "job_id", postgresql_where=text("router_version IS NOT NULL")),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("prompt_id", BigInteger, ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False),
    Column("model", Text, nullable=False),
    Column("stage", Text, nullable=False),
    Column("round", Integer, nullable=False, server_default="0"),
    Column("status", Text, nullable=False),
    Column("answer", Text),
    Column("prompt_tokens", Integer),
    Column("generated_tokens", Integer),
    Column("first_token_margin", Float),
    Column("mean_entropy", Float),
    Column("max_entropy", Float),
    Column("mean_nll", Float),
    Column("escalated", Boolean, nullable=False, server_default="false"),
    Column("retries", Integer, nullable=False, server_default="0"),
    Column("endpoint", Text),
    Column("latency_s", Float),
    Column("queue_s", Float),
    Column("inference_s", Float),
    Column("compute_s", Float),
    # Seconds the request kept its endpoint busy, before sharing with concurrent requests: the
    # server's inference time when reported, else measured latency (docs/cost-model.md).
    Column("busy_s", Float),
    # The model's price when the attempt ran, so later price changes do not rewrite history.
    Column("gpu_count", Integer, nullable=False, server_default="0"),
    Column("usd_per_gpu_hour", Numeric(12, 6), nullable=False, server_default="0"),
    Column("error", Text),
    Column("started_at", TS),
    Column("finished_at", TS, nullable=False, server_default=func.now()),
    # The server's reason for ending the generation; "length" means cut off at max_new_tokens.
    Column("finish_reason", Text),
    # Tokens of the document left out to fit the model's context (long_documents: truncate; 0007).
    Column("dropped_tokens", Integer),
    # The token logprobs an OpenAI request's caller asked for, in OpenAI's shape; NULL when none (0012).
    Column("logprobs", JSONB),
    # Redelivered or duplicate messages can never record the same step twice.
    UniqueConstraint("prompt_id", "model", "stage", "round", name="uq_attempts_step"),
    CheckConstraint("status IN ('ok', 'error')", name="status"),
    CheckConstraint("stage IN ('answer', 'critique', 'refine', 'combine')", name="stage"),
    # Rounds count a model's refinements from 0 (0019: the report counts answered prompts by it).
    CheckConstraint("round >= 0", name="round"),
    Index("ix_attempts_model", "model"),
    Index("ix_attempts_endpoint_finished_at", "endpoint", "finished_at"),
)

finals = Table(
    "finals",
    metadata,
    Column("prompt_id", BigInteger, ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "attempt_id", BigInteger, ForeignKey("attempts.id", ondelete="CASCADE"), nullable=False, unique=True
    ),
    Column("model", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)

scores = Table(
    "scores",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("attempt_id", BigInteger, ForeignKey("attempts.id", ondelete="CASCADE"), nullable=False),
    Column("scorer", Text, nullable=False),
    # Normalized to [0, 1] (a judge's 1-10 rating r is stored as (r - 1) / 9); `raw` keeps the original.
    Column("score", Float, nullable=False),
    Column("raw", Text),
    Column("judge_model", Text),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("attempt_id", "scorer", name="uq_scores_attempt_id_scorer"),
    CheckConstraint("score >= 0 AND score <= 1", name="score_range"),
)

# Chosen policies as text (herd/policy/spec.py's YAML), one version sequence per task (0005).
policies = Table(
    "policies",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("task", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("source_job_id", BigInteger, ForeignKey("jobs.id", ondelete="SET NULL")),
    # Train and held-out estimates with their intervals, the target, the ECE: what `herd calibrate` saw.
    Column("estimates", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("task", "version", name="uq_policies_task"),
)

# Per task, the version workers run; rolling back points it at an earlier version.
active_policies = Table(
    "active_policies",
    metadata,
    Column("task", Text, primary_key=True),
    Column("policy_id", BigInteger, ForeignKey("policies.id", ondelete="CASCADE"), nullable=False),
    Column("activated_at", TS, nullable=False, server_default=func.now()),
)

# Files `herd submit --skip-unreadable` could not read, with the reason (0007).
skipped_files = Table(
    "skipped_files",
    metadata,
    Column("job_id", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("doc_key", Text, primary_key=True),
    Column("path", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)

# Trained routers as JSON text (herd.policy.router.model.Router.to_json, never pickle), one version
# sequence per task (0008); `figures`: the held-out figures `herd router train` reported.
routers = Table(
    "routers",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("task", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("json", Text, nullable=False),
    Column("encoder", Text, nullable=False),
    Column("source_job_id", BigInteger, ForeignKey("jobs.id", ondelete="SET NULL")),
    Column("figures", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("task", "version", name="uq_routers_task"),
)

# Per task, the router version `herd submit` routes with (none: the entry model of the policy/herd file).
active_routers = Table(
    "active_routers",
    metadata,
    Column("task", Text, primary_key=True),
    Column("router_id", BigInteger, ForeignKey("routers.id", ondelete="CASCADE"), nullable=False),
    Column("activated_at", TS, nullable=False, server_default=func.now()),
)

# Stored cost shares (migration 0009, herd/ledger/shares.py, docs/cost-model.md): per endpoint, the
# instant before which shares are final; the cuts reached; final shares; parts of attempts in flight
# across a cut; late arrivals noted by the attempts trigger for the next fill.
cost_share_marks = Table(
    "cost_share_marks",
    metadata,
    Column("endpoint", Text, primary_key=True),
    Column("closed_until", TS, nullable=False, server_default=text("'-infinity'")),
    Column("max_busy_s", Float, nullable=False, server_default="0"),
)

cost_share_cuts = Table(
    "cost_share_cuts",
    metadata,
    Column("endpoint", Text, primary_key=True),
    Column("cut", TS, primary_key=True),
)

cost_shares = Table(
    "cost_shares",
    metadata,
    Column("attempt_id", BigInteger, ForeignKey("attempts.id", ondelete="CASCADE"), primary_key=True),
    Column("shared_s", Numeric, nullable=False),
    # From the attempt, by the fill's INSERT or a trigger (migration 0017): what cost_share_totals sums.
    Column("job_id", BigInteger),
    Column("model", Text),
    Column("gpu_s", Numeric),
    Column("cost_usd", Numeric),
)

# Running totals of each job's stored shares (migration 0017), kept by triggers on cost_shares; per
# scale of the summed figures, so a view rounds a sum to the scale the views' own sum() gives.
cost_share_totals = Table(
    "cost_share_totals",
    metadata,
    Column("job_id", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("model", Text, primary_key=True),
    Column("gpu_scale", Integer, primary_key=True),
    Column("cost_scale", Integer, primary_key=True),
    Column("shares", BigInteger, nullable=False),
    Column("gpu_s", Numeric, nullable=False),
    Column("cost_usd", Numeric, nullable=False),
)

# Attempts whose share must follow their new prompt, model, GPU count or price (migration 0018): a row
# trigger notes them, the same statement's statement trigger syncs their shares in one UPDATE and
# deletes them. Empty between statements, so UNLOGGED: no WAL for rows that never outlive one.
cost_share_resync = Table(
    "cost_share_resync",
    metadata,
    Column("attempt_id", BigInteger, nullable=False),
    prefixes=["UNLOGGED"],
)

cost_share_carry = Table(
    "cost_share_carry",
    metadata,
    Column("attempt_id", BigInteger, ForeignKey("attempts.id", ondelete="CASCADE"), primary_key=True),
    Column("cut", TS, primary_key=True),
    Column("part_s", Numeric, nullable=False),
)

cost_share_late = Table(
    "cost_share_late",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("endpoint", Text, nullable=False),
    Column("busy_start", TS, nullable=False),
    Column("busy_s", Float, nullable=False),
)

# Sealed jobs (migration 0010, herd/ledger/shares.py): a job whose shares are all final, with its
# job_windows row; cost_rollups holds its job_model_costs rows (plus the raw attributed GPU seconds).
# Deleting the job's cost_rollup_jobs row (any change to its attempts) unseals it.
cost_rollup_jobs = Table(
    "cost_rollup_jobs",
    metadata,
    Column("job_id", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("window_start", TS),
    Column("window_end", TS),
    Column("window_s", Numeric),
    Column("sealed_at", TS, nullable=False, server_default=func.now()),
)

cost_rollups = Table(
    "cost_rollups",
    metadata,
    Column("job_id", BigInteger, ForeignKey("cost_rollup_jobs.job_id", ondelete="CASCADE"), primary_key=True),
    Column("model", Text, primary_key=True),
    *[
        Column(name, BigInteger)
        for name in (
            "attempts answers critiques refinements escalations errors prompt_tokens generated_tokens"
        ).split()
    ],
    *[
        Column(name, Numeric)
        for name in "attributed_gpu_hours cost_usd provisioned_gpu_hours provisioned_cost_usd".split()
    ],
    Column("latency_p50_s", Float),
    Column("latency_p95_s", Float),
    Column("attributed_gpu_seconds", Numeric),
)


# The OpenAI Files and Batches API (`herd serve`, herd/api/; migration 0012). Keys are stored as the
# SHA-256 of the token (never the token); every file and batch belongs to the owner of the key that
# made it. `seq` orders lists and pages them (`after`); ids are the API's opaque strings.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("owner", Text, nullable=False),
    # The token's first characters, to tell keys apart in `herd keys list` (not enough to use it).
    Column("prefix", Text, nullable=False),
    Column("sha256", Text, nullable=False, unique=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("revoked_at", TS),
)

api_files = Table(
    "api_files",
    metadata,
    Column("id", Text, primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("owner", Text, nullable=False),
    Column("filename", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("purpose IN ('batch', 'batch_output')", name="purpose"),
    Index("ix_api_files_owner_seq", "owner", "seq"),
)

# A stored file's bytes in order, in chunks of at most 1 MiB (herd/api/store.py).
api_file_chunks = Table(
    "api_file_chunks",
    metadata,
    Column("file_id", Text, ForeignKey("api_files.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

api_batches = Table(
    "api_batches",
    metadata,
    Column("id", Text, primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("owner", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    # No foreign key: the input file may be deleted once its requests are in the ledger.
    Column("input_file_id", Text, nullable=False),
    Column("completion_window", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="validating"),
    Column("output_file_id", Text),
    Column("error_file_id", Text),
    # Validation errors, OpenAI's `errors.data`: [{code, line, message, param}].
    Column("errors", JSONB),
    Column("metadata", JSONB),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("expires_at", TS, nullable=False),
    *[
        Column(f"{event}_at", TS)
        for event in "in_progress finalizing completed failed expired cancelling cancelled".split()
    ],
    CheckConstraint(
        "status IN ('validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', "
        "'cancelling', 'cancelled')",
        name="status",
    ),
    Index("ix_api_batches_owner_seq", "owner", "seq"),
    # What `herd serve`'s keeper polls: the few batches not yet at rest.
    Index(
        "ix_api_batches_active",
        "status",
        postgresql_where=text("status IN ('validating', 'in_progress', 'finalizing', 'cancelling')"),
    ),
)

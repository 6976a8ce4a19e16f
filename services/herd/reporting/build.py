"""`herd report JOB`, step one: read the reporting views into a Report (render.py and plot.py show it).

Every number is a reporting view's (migration 0003: job_costs, job_model_costs, perfics_inputs): a
user in psql and `herd report` see the same numbers. The job's summary is job_costs' own expressions
over the job_model_costs rows the report reads, in one statement (`_SUMMARY`), so an unsealed job's
costs are computed once rather than once per view (tests/unit/test_report_summary.py compares them).
Money stays Decimal end to end here; render.py decides how to round it for each format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from herd.errors import UserError
from herd.herdfile.model import TaskConfig
from herd.ledger.jobs import UnknownJobError
from herd.reporting import perfics
from herd.reporting.audit import AuditEstimate, estimate
from herd.reporting.perfics import PolicyInput, Weights
from herd.reporting.versions import Alone, VersionRow, alone, by_version

_KIND_ORDER = {"model": 0, "cascade": 1, "counterfactual": 2}
# The counterfactual row of a job whose prompts a router entered (migration 0011's ROUTED_ENTRY): each
# prompt's first answer from its own entry model, where an unrouted job has '<entry model>-only'.
ROUTED_ENTRY = "routed entry"


class UnknownScorerError(UserError, LookupError):
    pass


@dataclass(frozen=True)
class JobSummary:
    job: str
    task: str
    prompts: int
    done: int
    failed: int
    window_start: datetime | None
    window_end: datetime | None
    attributed_gpu_hours: Decimal
    cost_usd: Decimal
    provisioned_gpu_hours: Decimal
    provisioned_cost_usd: Decimal
    cost_per_1k_prompts_usd: Decimal | None


@dataclass(frozen=True)
class Row:
    """One model or policy. kind: 'model', 'cascade' or 'counterfactual' ('<entry model>-only', or
    'routed entry' when a router chose each prompt's entry model)."""

    policy: str
    kind: str
    prompts: int
    escalations: int
    refinements: int
    refinement_rounds: Decimal
    quality_base: float | None
    quality_refined: float | None
    cost_usd: Decimal
    gpu_hours: Decimal
    cost_per_1k_prompts_usd: Decimal
    latency_p50_s: float | None
    latency_p95_s: float | None
    provisioned_gpu_hours: Decimal | None
    provisioned_cost_usd: Decimal | None
    perfics: float | None
    rank: int | None
    # A model row covering only part of the job: a later tier, scored on the prompts escalated to it,
    # or in a routed job (Report.routed) a model scored on the prompts routed or escalated to it.
    partial: bool = False

    @property
    def label(self) -> str:
        """The policy name, marked `*` when the row covers only part of the job (the table's footnote
        says which part): short, so the compact table still fits 80 columns."""
        return f"{self.policy}*" if self.partial else self.policy


@dataclass(frozen=True)
class Report:
    summary: JobSummary
    scorer: str | None  # the scorer the qualities and PeRFICS use; None when the job has no scores
    scorers: list[str]  # every scorer with scores in the job
    weights: Weights
    rows: list[Row]
    versions: list[VersionRow] = field(default_factory=list)  # per policy version that decided
    alone: Alone | None = None  # each model alone on the task's calibration job, when there is one
    audit: AuditEstimate | None = None  # the audit's estimate of the live policy (reporting/audit.py)

    @property
    def routed(self) -> bool:
        """A router chose the entry model of the job's prompts (the view names its counterfactual so)."""
        return any(r.kind == "counterfactual" and r.policy == ROUTED_ENTRY for r in self.rows)

    def long_label(self, row: Row) -> str:
        """For a plot, where there is room: 'gemma3 (22 escalated prompts)'."""
        if not row.partial:
            return row.policy
        return f"{row.policy} ({row.prompts} {'routed or escalated' if self.routed else 'escalated'} prompts)"


def _query(conn: psycopg.Connection, sql: str, job: str) -> list[dict[str, Any]]:
    """Rows of `sql`, its `%(job)s` placeholders bound to `job`."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, {"job": job})
        return cur.fetchall()


def build(
    conn: psycopg.Connection,
    job: str,
    *,
    scorer: str | None = None,
    weights: Weights | None = None,
    tasks: Callable[[], Mapping[str, TaskConfig]] | None = None,
) -> Report:
    """The report of `job`. With `tasks` (the herd file's tasks, read only if the job is audited),
    the audit's estimate too."""
    weights = weights or Weights()
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if idle:
            # One snapshot for the three views: workers may record attempts between the queries.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        found = _query(conn, _SUMMARY, job)
        if not found:
            raise UnknownJobError(f"no job named {job!r}")
        models = {
            r["m_model"]: {name: r[f"m_{name}"] for name in _FROM_MODELS}
            for r in found
            if r["m_model"] is not None
        }
        inputs = _query(conn, "SELECT * FROM perfics_inputs WHERE job = %(job)s", job)
    summary = JobSummary(**{f.name: found[0][f.name] for f in fields(JobSummary)})
    scorers = sorted({r["scorer"] for r in inputs if r["scorer"] is not None})
    if scorer is not None and scorer not in scorers:
        have = ", ".join(scorers) or "none (run `herd score` first)"
        raise UnknownScorerError(f"job {job!r} has no scores from {scorer!r}; its scorers: {have}")
    # Default: the only scorer, or the first by name (the report names the others).
    chosen = scorer if scorer is not None else (scorers[0] if scorers else None)
    inputs = [r for r in inputs if r["scorer"] == chosen]
    # Models by how many prompts they saw (the entry tier first), then the cascade, then the
    # counterfactual.
    inputs.sort(key=lambda r: (_KIND_ORDER.get(r["kind"], 3), -r["prompts"], r["policy"]))
    scores = perfics.score(
        [PolicyInput(**{f.name: r[f.name] for f in fields(PolicyInput)}) for r in inputs], weights
    )
    rows = [
        Row(
            **{name: r[name] for name in _FROM_INPUTS},
            **_model_figures(r, models, summary),
            perfics=score.perfics,
            rank=score.rank,
        )
        for r, score in zip(inputs, scores, strict=True)
    ]
    rows = [replace(r, partial=r.kind == "model" and r.prompts < summary.prompts) for r in rows]
    with conn.transaction():
        # alone() reads attempt_costs for one job: milliseconds of work that Postgres would JIT-compile
        # for seconds, misled by whole-table estimates of the open tail (migration 0010 says more).
        conn.execute("SET LOCAL jit = off")
        versions = by_version(conn, job, chosen)
        models_alone = alone(conn, summary.task, chosen)
        audited = None
        if tasks is not None:
            job_id = conn.execute("SELECT id FROM jobs WHERE name = %s", (job,)).fetchone()
            audited = estimate(conn, int(job_id[0]), job, tasks) if job_id else None
    return Report(summary, chosen, scorers, weights, rows, versions, models_alone, audited)


# Row fields read from perfics_inputs as they are, and from job_model_costs (see _model_figures).
_FROM_INPUTS = tuple(
    """policy kind prompts refinement_rounds quality_base quality_refined
       cost_usd gpu_hours cost_per_1k_prompts_usd""".split()
)
_FROM_MODELS = tuple(
    "escalations refinements latency_p50_s latency_p95_s provisioned_gpu_hours provisioned_cost_usd".split()
)


# The job's job_costs row and its job_model_costs rows (columns m_*, none for a job without attempts),
# in one statement: job_costs sums job_model_costs, which for an unsealed job reads all its attempts,
# so reading both views computed it twice. The summary columns are job_costs' own expressions
# (migration 0003) over the rows read once; tests/unit/test_report_summary.py compares them.
_SUMMARY = f"""
WITH m AS MATERIALIZED (SELECT * FROM job_model_costs WHERE job = %(job)s),
sums AS (
    SELECT sum(attributed_gpu_hours) AS attributed_gpu_hours, sum(cost_usd) AS cost_usd,
           sum(provisioned_gpu_hours) AS provisioned_gpu_hours,
           sum(provisioned_cost_usd) AS provisioned_cost_usd
    FROM m
),
summary AS (
    SELECT j.name AS job, j.task,
           coalesce(pc.prompts, 0) AS prompts, coalesce(pc.done, 0) AS done,
           coalesce(pc.failed, 0) AS failed,
           w.window_start, w.window_end,
           coalesce(s.attributed_gpu_hours, 0) AS attributed_gpu_hours,
           coalesce(s.cost_usd, 0) AS cost_usd,
           coalesce(s.provisioned_gpu_hours, 0) AS provisioned_gpu_hours,
           coalesce(s.provisioned_cost_usd, 0) AS provisioned_cost_usd,
           1000::numeric * coalesce(s.cost_usd, 0) / nullif(pc.prompts, 0)::numeric AS cost_per_1k_prompts_usd
    FROM jobs j
    CROSS JOIN sums s
    CROSS JOIN LATERAL (
        SELECT count(*) AS prompts,
               count(*) FILTER (WHERE p.state = 'done') AS done,
               count(*) FILTER (WHERE p.state = 'failed') AS failed
        FROM prompts p
        WHERE p.job_id = j.id
    ) pc
    LEFT JOIN LATERAL (SELECT * FROM job_windows w WHERE w.job_id = j.id) w ON true
    WHERE j.name = %(job)s
)
SELECT summary.*, m.model AS m_model, {", ".join(f"m.{name} AS m_{name}" for name in _FROM_MODELS)}
FROM summary
LEFT JOIN m ON true
ORDER BY m.model
"""


def _model_figures(
    r: dict[str, Any], models: dict[str, dict[str, Any]], summary: JobSummary
) -> dict[str, Any]:
    """The job_model_costs figures that apply to a perfics_inputs row's policy."""
    if r["kind"] == "cascade":
        return {
            "escalations": sum(m["escalations"] for m in models.values()),
            "refinements": sum(m["refinements"] for m in models.values()),
            "latency_p50_s": None,
            "latency_p95_s": None,
            "provisioned_gpu_hours": summary.provisioned_gpu_hours,
            "provisioned_cost_usd": summary.provisioned_cost_usd,
        }
    model = r["policy"] if r["kind"] == "model" else r["policy"].removesuffix("-only")
    figures = {name: models.get(model, {}).get(name) for name in _FROM_MODELS}
    figures["escalations"] = figures["escalations"] or 0
    figures["refinements"] = figures["refinements"] or 0
    if r["kind"] == "counterfactual":
        # '<entry>-only' never escalates, and nobody provisioned a herd of one for it.
        figures.update(escalations=0, provisioned_gpu_hours=None, provisioned_cost_usd=None)
    if r["policy"] == ROUTED_ENTRY and r["kind"] == "counterfactual":
        # Several models' answers: no one model's latency; its refinements are the entry models' on
        # their own prompts, which the view gives per prompt.
        refinements = (r["refinement_rounds"] * r["prompts"]).to_integral_value()
        figures.update(refinements=int(refinements), latency_p50_s=None, latency_p95_s=None)
    return figures

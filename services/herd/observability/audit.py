"""The audit's figures for `herd metrics`: per task, the latest audited live job's estimate of the live
policy's quality, its exact interval and the calibration's promise (herd/reporting/audit.py).

Labels stay bounded (docs in herd/observability/metrics.py): the task and the measure, never a job
name; the job is the task's most recently created audited job. The estimate shown is that of the
newest policy version that decided its audited prompts (None: the herd file's cascade).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric

from herd.herdfile.model import TaskConfig
from herd.reporting.audit import AuditEstimate, estimate

LATEST_AUDITED = """
    SELECT DISTINCT ON (j.task) j.task, j.id, j.name
    FROM jobs a JOIN jobs j ON j.id = a.audit_of
    ORDER BY j.task, j.created_at DESC, j.id DESC"""


def read_audits(conn: psycopg.Connection[Any], tasks: Mapping[str, TaskConfig]) -> dict[str, AuditEstimate]:
    """Per task: the audit estimate of its latest audited job (tasks without one are absent)."""
    out: dict[str, AuditEstimate] = {}
    for task, job_id, name in conn.execute(LATEST_AUDITED).fetchall():
        found = estimate(conn, int(job_id), str(name), lambda: tasks, costs=False)
        if found is not None:
            out[str(task)] = found
    return out


def audit_metrics(audits: Mapping[str, AuditEstimate]) -> Iterator[Metric]:
    quality = GaugeMetricFamily(
        "herd_audit_quality",
        "The audit's estimate of the live policy's quality on the latest audited job of the task: "
        "accuracy where references exist, else agreement with the reference model.",
        labels=["task", "measure"],
    )
    low = GaugeMetricFamily(
        "herd_audit_quality_low", "Lower end of the estimate's 95% Clopper-Pearson interval.", labels=["task"]
    )
    high = GaugeMetricFamily(
        "herd_audit_quality_high",
        "Upper end of the estimate's 95% Clopper-Pearson interval.",
        labels=["task"],
    )
    promised = GaugeMetricFamily(
        "herd_audit_promised_quality",
        "The quality the policy version's calibration promised (absent: no promise recorded).",
        labels=["task"],
    )
    drop = GaugeMetricFamily(
        "herd_audit_drop",
        "1 when the promise (without one, the calibration's held-out interval) lies above the interval's "
        "upper end, else 0.",
        labels=["task"],
    )
    prompts = GaugeMetricFamily("herd_audit_prompts", "Audited prompts behind the estimate.", labels=["task"])
    for task, est in sorted(audits.items()):
        if not est.rows:
            continue
        row = max(est.rows, key=lambda r: -1 if r.version is None else r.version)
        quality.add_metric([task, row.measure], row.estimate)
        low.add_metric([task], row.low)
        high.add_metric([task], row.high)
        if row.promised is not None:
            promised.add_metric([task], row.promised)
        drop.add_metric([task], 1.0 if row.drop else 0.0)
        prompts.add_metric([task], row.prompts)
    yield from (quality, low, high, promised, drop, prompts)

"""`herd metrics`: a Prometheus exporter that reads the ledger (Postgres) and the broker (Redis) on
each scrape.

Why an exporter process rather than counters inside the workers: a host runs several worker processes
(one per model, replicas, restarts), and in-process counters would need prometheus_client's
multiprocess mode (a shared directory of mmap files per host, cleaned on every restart, with no
answer for workers on other hosts). The ledger already records every attempt with its model, stage,
status, latency, busy time and price, and is shared by all workers everywhere, so counting there is
exact by construction and the workers need no change. One exporter serves the whole deployment.

Labels are bounded: model, stage, outcome, error kind, prompt state, the kind and task of a stale
reference. Never a job name or prompt id.

Counters are ledger totals: deleting jobs from the ledger makes them go down, which Prometheus's
rate() treats as a counter reset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from psycopg import sql

from herd.herdfile.model import HerdConfig, TaskConfig
from herd.herdfile.references import KINDS, StaleReference
from herd.jobs.references import stale_versions, waiting_at_unknown
from herd.ledger.outcomes import error_kind_sql
from herd.observability.audit import audit_metrics, read_audits
from herd.queues import queue_for
from herd.reporting.audit import AuditEstimate
from herd.vocabulary import PromptState

log = logging.getLogger(__name__)

# Seconds: from a small model's short answer on a GPU to a 70B model's long one behind a queue.
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OUTCOMES = ("ok", "escalated", "error")

# Kombu's Redis transport keeps one list per priority step ("<queue>", "<queue>\x06\x163", ...);
# Herd publishes without a priority, but a message sent with one must still be counted.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)


def _buckets_sql(column: str) -> sql.Composable:
    """`ARRAY[count(*) FILTER (WHERE column <= b) ...]`: cumulative bucket counts in one pass."""
    counts = [
        sql.SQL("count(*) FILTER (WHERE {} <= {})").format(sql.Identifier(column), sql.Literal(b))
        for b in LATENCY_BUCKETS
    ]
    return sql.SQL("ARRAY[{}]::bigint[]").format(sql.SQL(", ").join(counts))


ATTEMPTS_SQL = sql.SQL(
    """SELECT model, stage,
              CASE WHEN status = 'error' THEN 'error' WHEN escalated THEN 'escalated' ELSE 'ok' END,
              CASE WHEN status = 'error' THEN {kind} END,
              count(*)
       FROM attempts GROUP BY 1, 2, 3, 4"""
).format(kind=error_kind_sql())

# Latency of successful attempts, like the ledger's latency_percentiles view (an error's latency
# measures the failure, not the model); busy time of every attempt that held an endpoint, since
# that is what is charged.
LATENCY_SQL = sql.SQL(
    """SELECT model, stage, count(*), coalesce(sum(latency_s), 0), {buckets}
       FROM attempts WHERE status = 'ok' AND latency_s IS NOT NULL GROUP BY model, stage"""
).format(buckets=_buckets_sql("latency_s"))
BUSY_SQL = sql.SQL(
    """SELECT model, count(*), coalesce(sum(busy_s), 0), {buckets}
       FROM attempts WHERE busy_s IS NOT NULL GROUP BY model"""
).format(buckets=_buckets_sql("busy_s"))
COST_SQL = "SELECT model, attributed_gpu_hours, cost_usd FROM model_costs"
STATES_SQL = "SELECT state, count(*) FROM prompts GROUP BY state"
# ix_prompts_queued (partial, on enqueued_at) keeps this small on a huge ledger.
QUEUED_SQL = """SELECT model, count(*), extract(epoch FROM now() - min(enqueued_at))
                FROM prompts WHERE state = 'queued' GROUP BY model"""


@dataclass
class LedgerSnapshot:
    """What the Postgres queries returned, kept between scrapes for at most `max_age_s`."""

    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    latency: list[tuple[Any, ...]] = field(default_factory=list)
    busy: list[tuple[Any, ...]] = field(default_factory=list)
    states: list[tuple[Any, ...]] = field(default_factory=list)
    queued: list[tuple[Any, ...]] = field(default_factory=list)
    stale: list[StaleReference] | None = None  # None: no herd file to check against
    audits: dict[str, AuditEstimate] = field(default_factory=dict)  # per task (observability/audit.py)
    taken_at: float = 0.0


def read_ledger(
    conn: psycopg.Connection[Any],
    herd: HerdConfig | None = None,
    tasks: Mapping[str, TaskConfig] | None = None,
) -> LedgerSnapshot:
    """Every ledger figure in one read-only transaction, so they agree with each other. With `herd`,
    also the stored references it no longer backs (herd/jobs/references.py); with the herd file's
    `tasks` (by default `herd`'s), the audit estimates too."""
    if tasks is None and herd is not None:
        tasks = herd.tasks
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return LedgerSnapshot(
            stale=None if herd is None else stale_versions(conn, herd) + waiting_at_unknown(conn, herd),
            attempts=conn.execute(ATTEMPTS_SQL).fetchall(),
            latency=conn.execute(LATENCY_SQL).fetchall(),
            busy=conn.execute(BUSY_SQL).fetchall(),
            states=conn.execute(STATES_SQL).fetchall(),
            queued=conn.execute(QUEUED_SQL).fetchall(),
            audits=read_audits(conn, tasks) if tasks is not None else {},
            taken_at=time.monotonic(),
        )


def _histogram(
    name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    n = len(labels)
    for row in rows:
        label_values, (count, total, cumulative) = row[:n], row[n:]
        buckets = [(repr(float(b)), int(c)) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", int(count)))
        family.add_metric([str(v) for v in label_values], buckets, sum_value=float(total))
    return family


def ledger_metrics(snap: LedgerSnapshot, costs: Sequence[tuple[Any, ...]] | None) -> Iterator[Metric]:
    attempts = CounterMetricFamily(
        "herd_attempts", "Attempts recorded in the ledger.", labels=["model", "stage", "outcome"]
    )
    escalations = CounterMetricFamily(
        "herd_escalations",
        "Successful attempts whose answer was escalated to the next model.",
        labels=["model"],
    )
    errors = CounterMetricFamily(
        "herd_errors", "Attempts that ended in an error, by kind.", labels=["model", "kind"]
    )
    per_outcome: dict[tuple[str, str, str], int] = {}
    per_escalation: dict[str, int] = {}
    per_error: dict[tuple[str, str], int] = {}
    for model, stage, outcome, kind, count in snap.attempts:
        per_outcome[(model, stage, outcome)] = per_outcome.get((model, stage, outcome), 0) + int(count)
        if outcome == "escalated":
            per_escalation[model] = per_escalation.get(model, 0) + int(count)
        if kind is not None:
            per_error[(model, kind)] = per_error.get((model, kind), 0) + int(count)
    for labels, count in sorted(per_outcome.items()):
        attempts.add_metric(list(labels), count)
    for model in sorted({m for m, _, _ in per_outcome}):
        escalations.add_metric([model], per_escalation.get(model, 0))
    for (model, kind), count in sorted(per_error.items()):
        errors.add_metric([model, kind], count)
    yield attempts
    yield escalations
    yield errors
    yield _histogram(
        "herd_attempt_latency_seconds",
        "Latency of successful attempts, as measured by the worker.",
        ["model", "stage"],
        snap.latency,
    )
    yield _histogram(
        "herd_attempt_busy_seconds",
        "Seconds each attempt kept its endpoint busy, before sharing with concurrent requests.",
        ["model"],
        snap.busy,
    )
    cost = CounterMetricFamily(
        "herd_attributed_gpu_cost_usd",
        "GPU cost attributed to attempts (the ledger's model_costs view; docs/cost-model.md).",
        labels=["model"],
    )
    hours = CounterMetricFamily(
        "herd_attributed_gpu_hours", "GPU-hours attributed to attempts (model_costs).", labels=["model"]
    )
    if costs is not None:
        for model, gpu_hours, usd in costs:
            cost.add_metric([model], float(usd or 0))
            hours.add_metric([model], float(gpu_hours or 0))
        yield cost
        yield hours
    states = GaugeMetricFamily("herd_prompts", "Prompts in the ledger, by state.", labels=["state"])
    counted = {state: int(n) for state, n in snap.states}
    for state in PromptState:
        states.add_metric([state.value], counted.get(state.value, 0))
    yield states
    if snap.stale is not None:
        yield stale_metric(snap.stale)


def stale_metric(found: Sequence[StaleReference]) -> GaugeMetricFamily:
    """herd_stale_references{kind, task}: 1 per active policy or router version, and 1 per (job, model,
    state) group of waiting prompts, that names a model or task the herd file lacks. Labels are
    bounded: three kinds, and the tasks of stored versions. 0 for every kind when all is well."""
    gauge = GaugeMetricFamily(
        "herd_stale_references",
        "Stored references (active policy/router versions, groups of waiting prompts) naming a model "
        "or task the herd file does not define; each is refused where it is used.",
        labels=["kind", "task"],
    )
    counts: dict[tuple[str, str], int] = {}
    for ref in found:
        counts[(ref.kind, ref.task)] = counts.get((ref.kind, ref.task), 0) + 1
    for kind in KINDS:
        if not any(k == kind for k, _ in counts):
            gauge.add_metric([kind, ""], 0)
    for (kind, task), n in sorted(counts.items()):
        gauge.add_metric([kind, task], n)
    return gauge


def queue_metrics(
    models: Sequence[str],
    lengths: dict[str, int] | None,
    queued: Sequence[tuple[Any, ...]] | None,
) -> Iterator[Metric]:
    """Per model queue: messages waiting in Redis (LLEN) and, from the ledger, prompts queued at the
    model and the age of the oldest (a backlog no worker drains shows as a growing age)."""
    if lengths is not None:
        depth = GaugeMetricFamily(
            "herd_queue_length",
            "Messages waiting in the model's Redis queue (herd.<model>).",
            labels=["model"],
        )
        for model in models:
            depth.add_metric([model], lengths.get(model, 0))
        yield depth
    if queued is not None:
        at_model = {row[0]: row for row in queued}
        count = GaugeMetricFamily(
            "herd_queued_prompts",
            "Prompts queued at the model (in its queue or being worked on).",
            labels=["model"],
        )
        age = GaugeMetricFamily(
            "herd_queue_oldest_age_seconds",
            "Age of the model's oldest queued prompt; 0 when none is queued.",
            labels=["model"],
        )
        for model in sorted(set(models) | set(at_model)):
            row = at_model.get(model)
            count.add_metric([model], int(row[1]) if row else 0)
            age.add_metric([model], max(float(row[2]), 0.0) if row and row[2] is not None else 0.0)
        yield count
        yield age


def queue_lengths(client: Any, models: Sequence[str]) -> dict[str, int]:
    """LLEN of every model's queue, its priority lists included, in one round trip."""
    pipe = client.pipeline(transaction=False)
    keys = {
        model: [queue_for(model), *(f"{queue_for(model)}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS)]
        for model in models
    }
    for model in models:
        for key in keys[model]:
            pipe.llen(key)
    results = iter(pipe.execute())
    return {model: sum(int(next(results)) for _ in keys[model]) for model in models}


class HerdCollector(Collector):
    """Computes every metric on scrape. The ledger queries scan `attempts`; on a huge ledger
    `max_age_s` lets several scrapes share one read (docs/deploy.md, sizing). Redis is read every
    time: LLEN is O(1). A source that is down is reported in `herd_up`, not as a failed scrape.

    The attributed cost is the dearest read: model_costs reads sealed jobs' stored totals (migration
    0010) but computes every running job live, seconds per 100k of its attempts. It is computed once
    synchronously, then refreshed in a background thread every `cost_max_age_s`, so no scrape waits
    for it; `herd_cost_age_seconds` says how old the figure is."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        redis_client: Any,
        models: Sequence[str],
        *,
        herd: HerdConfig | None = None,
        max_age_s: float = 0.0,
        cost_max_age_s: float = 300.0,
        tasks: Mapping[str, TaskConfig] | None = None,
    ) -> None:
        self._connect = connect
        self._redis = redis_client
        self._models = list(models)
        self._herd = herd
        self._tasks = tasks
        self._max_age_s = max_age_s
        self._conn: psycopg.Connection[Any] | None = None
        self._snapshot: LedgerSnapshot | None = None
        self._lock = threading.Lock()  # prometheus_client's server is threaded; one read at a time
        self._cost_max_age_s = cost_max_age_s
        self._costs: list[tuple[Any, ...]] | None = None
        self._costs_at: float | None = None
        self._cost_thread: threading.Thread | None = None

    def _refresh_costs(self) -> None:
        try:
            with self._connect() as conn:
                rows = conn.execute(COST_SQL).fetchall()
            self._costs, self._costs_at = rows, time.monotonic()
        except psycopg.Error as exc:
            log.warning("metrics: cannot read the attributed cost: %s", exc)

    def _cost_rows(self) -> list[tuple[Any, ...]] | None:
        if self._costs_at is None:
            self._refresh_costs()  # the first scrape waits for it once
        elif time.monotonic() - self._costs_at >= self._cost_max_age_s and not (
            self._cost_thread is not None and self._cost_thread.is_alive()
        ):
            self._cost_thread = threading.Thread(target=self._refresh_costs, name="herd-cost", daemon=True)
            self._cost_thread.start()
        return self._costs

    def _ledger(self) -> LedgerSnapshot | None:
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.taken_at < self._max_age_s:
            return snap
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            self._snapshot = read_ledger(self._conn, self._herd, self._tasks)
            return self._snapshot
        except psycopg.Error as exc:
            log.warning("metrics: cannot read the ledger: %s", exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None

    def close(self) -> None:
        """Close the ledger connection kept from one scrape to the next; a later scrape opens another."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.monotonic()
            snap = self._ledger()
            try:
                lengths: dict[str, int] | None = queue_lengths(self._redis, self._models)
            except Exception as exc:  # noqa: BLE001 - any broker failure is reported as redis down
                log.warning("metrics: cannot read the queues: %s", exc)
                lengths = None
            up = GaugeMetricFamily(
                "herd_up", "Whether the exporter could read the source.", labels=["source"]
            )
            up.add_metric(["postgres"], 1 if snap is not None else 0)
            up.add_metric(["redis"], 1 if lengths is not None else 0)
            yield up
            if snap is not None:
                costs = self._cost_rows()
                yield from ledger_metrics(snap, costs)
                yield from audit_metrics(snap.audits)
                if self._costs_at is not None:
                    yield GaugeMetricFamily(
                        "herd_cost_age_seconds",
                        "Age of the attributed cost figures.",
                        value=time.monotonic() - self._costs_at,
                    )
            yield from queue_metrics(self._models, lengths, snap.queued if snap is not None else None)
            yield GaugeMetricFamily(
                "herd_scrape_duration_seconds",
                "Time this scrape spent reading the sources.",
                value=time.monotonic() - started,
            )


def registry_for(collector: HerdCollector) -> CollectorRegistry:
    # auto_describe off: registering must not run the queries (the sources may still be starting).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry

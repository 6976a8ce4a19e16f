"""The audit's estimate of a live job's quality, beside the promise of the policy that decided it.

An audited job (herd/quality/audit.py) has, for each sampled document, the cascade's final answer and
the reference model's own answer. Per policy version that decided the sampled prompts:
- `accuracy` when every sampled document has a reference: the share of the cascade's final answers
  that are right (herd.quality.scorers.correct: the label for a classify task, else the normalized
  answer), the same figure a calibration with the `exact`/`label` scorer promises;
- `agreement` otherwise: the share of the cascade's final answers equal to the reference model's
  (the same label for a classify task, else the same normalized text). Where a right answer is one
  answer (a label, a short exact answer), it differs from the accuracy by at most the reference
  model's error rate, |accuracy - agreement| <= 1 - the reference's accuracy (two right answers
  agree; an answer agreeing with a right one is right). For free text it is a strict proxy.

The interval is Clopper and Pearson's (1934) exact binomial interval (`scipy.stats.binomtest(k, n)
.proportion_ci(method="exact")`), two-sided at LEVEL: it covers the true share with probability >=
LEVEL for every n. A drop is flagged when the promise lies above the interval's upper bound: if the
policy did keep its promise, that happens with probability <= (1 - LEVEL) / 2 per look.
Prompts without an answer from either side (failed, cut off, or not finished yet) are left out and
counted, never scored as a disagreement: an outage says nothing of the policy's quality.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeGuard

import psycopg
from scipy.stats import binomtest

from herd.herdfile.model import TaskConfig
from herd.ledger.outcomes import non_answer
from herd.quality.audit import Audit, job_audit
from herd.quality.scorers import agree, correct
from herd.reporting.policies import promise_text

LEVEL = 0.95


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact two-sided interval (low, high) for a binomial share from `k` successes in `n` trials
    (Clopper & Pearson 1934, via scipy). Raises ValueError unless 0 <= k <= n, n >= 1, 0 < level < 1."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1 (got k={k}, n={n})")
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class AuditRow:
    """The audit's figures for the prompts one policy version decided (`version` None: the herd file).

    `measure`: 'accuracy' or 'agreement'; `hits` of `prompts` agree (or are right); `estimate` = hits
    / prompts with the Clopper-Pearson interval [`low`, `high`] at LEVEL; `reference_accuracy`: the
    reference model's own accuracy when references exist; `promised`: the quality the version's
    calibration promised (None: no promise recorded); `basis`: what the estimate is checked against,
    'promise', 'calibration' (no promise: the lower end of the calibration's held-out interval) or
    'none' (nothing recorded to check); `checked`: that figure (None for 'none'); `promise`: its words;
    `drop`: checked > high."""

    version: int | None
    measure: str
    prompts: int
    hits: int
    estimate: float
    low: float
    high: float
    reference_accuracy: float | None
    promised: float | None
    promise: str
    drop: bool
    basis: str = "promise"
    checked: float | None = None


@dataclass(frozen=True)
class AuditEstimate:
    """A job's audit: the job auditing it, the rate and reference, how many documents it sampled,
    how many were left out (no answer on either side yet, or a failure), the audit's and the audited
    job's attributed cost, and a row per policy version."""

    job: str
    audit_job: str
    audit: Audit
    sampled: int
    left_out: int
    cost_usd: Decimal
    job_cost_usd: Decimal
    rows: list[AuditRow] = field(default_factory=list)
    level: float = LEVEL

    @property
    def drop(self) -> bool:
        return any(r.drop for r in self.rows)


_PAIRS = """
    SELECT p.policy_version, p.reference, f.answer, af.answer,
           a.status, a.error, a.finish_reason, aa.status, aa.error, aa.finish_reason
    FROM prompts ap
    JOIN prompts p ON p.job_id = %(job)s AND p.doc_key = ap.doc_key AND p.parent_id IS NULL
    JOIN finals f ON f.prompt_id = p.id JOIN attempts a ON a.id = f.attempt_id
    JOIN finals af ON af.prompt_id = ap.id JOIN attempts aa ON aa.id = af.attempt_id
    WHERE ap.job_id = %(audit)s AND ap.parent_id IS NULL"""

_COST = "SELECT coalesce(sum(cost_usd), 0) FROM attempt_costs WHERE job_id = %s"


def estimate(
    conn: psycopg.Connection,
    job_id: int,
    job: str,
    tasks: Callable[[], Mapping[str, TaskConfig]],
    level: float = LEVEL,
    costs: bool = True,
) -> AuditEstimate | None:
    """The audit estimate of job `job_id` (named `job`), or None when it is not audited. `tasks()`
    gives the herd file's tasks (called only for an audited job: how to compare answers depends on
    the task's kind and labels); a task the file no longer has compares normalized text. `costs`:
    also read both jobs' attributed cost (the attempt_costs view; `herd metrics` skips it, as its
    cost figures come from elsewhere), else they are 0."""
    found = job_audit(conn, job_id)
    if found is None:
        return None
    audit_id, audit_name, audit = found
    name = task_name(conn, job_id)
    task = tasks().get(name) or TaskConfig(kind="qa")
    pairs: dict[int | None, list[tuple[str | None, str, str]]] = defaultdict(list)
    for version, reference, final, theirs, *outcomes in conn.execute(
        _PAIRS, {"job": job_id, "audit": audit_id}
    ):
        # A cut-off answer on either side is no answer (herd.ledger.outcomes), never a disagreement:
        # left out, as calibration leaves it out.
        if non_answer(outcomes[0] == "ok", *outcomes[1:3]) or non_answer(outcomes[3] == "ok", *outcomes[4:6]):
            continue
        pairs[version].append((reference, str(final), str(theirs)))
    sampled_row = conn.execute(
        "SELECT count(*) FROM prompts WHERE job_id = %s AND parent_id IS NULL", (audit_id,)
    ).fetchone()
    sampled = int(sampled_row[0]) if sampled_row else 0
    cost = job_cost = Decimal(0)
    if costs:
        found_costs = [conn.execute(_COST, (jid,)).fetchone() for jid in (audit_id, job_id)]
        cost, job_cost = (Decimal(row[0]) if row else Decimal(0) for row in found_costs)
    promises = _promises(conn, name, sorted(v for v in pairs if v is not None))
    rows = [
        _row(task, version, pairs[version], promises.get(version), level)
        for version in sorted(pairs, key=lambda v: -1 if v is None else v)
    ]
    paired = sum(r.prompts for r in rows)
    return AuditEstimate(job, audit_name, audit, sampled, sampled - paired, cost, job_cost, rows, level)


def task_name(conn: psycopg.Connection, job_id: int) -> str:
    row = conn.execute("SELECT task FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return str(row[0]) if row else ""


@dataclass(frozen=True)
class _Basis:
    """What a version's audit is checked against (AuditRow's `promised`, `basis`, `checked`, `promise`)."""

    promised: float | None
    basis: str
    checked: float | None
    words: str


_HERD_FILE = _Basis(
    None,
    "none",
    None,
    "the herd file's cascade: no calibration, so no promise to check against (no drop can be flagged)",
)


def _row(
    task: TaskConfig,
    version: int | None,
    pairs: list[tuple[str | None, str, str]],
    promise: _Basis | None,
    level: float,
) -> AuditRow:
    with_reference = all(reference is not None for reference, _, _ in pairs)
    if with_reference:
        hits = sum(bool(correct(task, final, reference)) for reference, final, _ in pairs)
        ref_hits = sum(bool(correct(task, theirs, reference)) for reference, _, theirs in pairs)
        reference_accuracy: float | None = ref_hits / len(pairs)
    else:
        hits = sum(agree(task, final, theirs) for _, final, theirs in pairs)
        reference_accuracy = None
    n = len(pairs)
    low, high = clopper_pearson(hits, n, level)
    basis = promise if promise is not None else _HERD_FILE
    return AuditRow(
        version=version,
        measure="accuracy" if with_reference else "agreement",
        prompts=n,
        hits=hits,
        estimate=hits / n,
        low=low,
        high=high,
        reference_accuracy=reference_accuracy,
        promised=basis.promised,
        promise=basis.words,
        drop=basis.checked is not None and basis.checked > high,
        basis=basis.basis,
        checked=basis.checked,
    )


def _promises(conn: psycopg.Connection, task: str, versions: list[int]) -> dict[int | None, _Basis]:
    """Per policy version of `task`: what its audit is checked against (module docstring)."""

    out: dict[int | None, _Basis] = {}
    for version, estimates in conn.execute(
        "SELECT version, estimates FROM policies WHERE task = %s AND version = ANY(%s)", (task, versions)
    ):
        words = (
            f"version {version}: {estimates.get('target', 'no target recorded')}, {promise_text(estimates)}"
        )
        out[int(version)] = _basis(estimates, words)
    return out


def _basis(estimates: dict[str, Any], words: str) -> _Basis:
    promised = estimates.get("promised_quality")
    if _number(promised):
        return _Basis(float(promised), "promise", float(promised), words)
    held = _mapping(estimates.get("held_out"))
    quality = _mapping(held.get("quality"))
    low, value, prompts = quality.get("low"), quality.get("value"), held.get("prompts")
    if _number(low) and _number(value) and _number(prompts) and prompts > 0:
        return _Basis(
            None,
            "calibration",
            float(low),
            f"{words}; no promise recorded: checked against its calibration's held-out quality, "
            f"{float(value):.3f} [{float(low):.3f}, {float(quality.get('high') or value):.3f}] on "
            f"{int(prompts)} prompts (a drop: the intervals are disjoint)",
        )
    return _Basis(
        None,
        "none",
        None,
        f"{words}; no promise and no held-out measurement recorded: nothing to check against (no drop "
        "can be flagged)",
    )


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def lines(est: AuditEstimate) -> list[str]:
    """`herd status` and `herd report`'s audit section, one line per fact."""
    a = est.audit
    out = [
        f"audit: {est.sampled} prompts sampled at rate {a.rate:g}, answered by {a.reference} alone "
        f"(job {est.audit_job}); cost {est.cost_usd:.6g} USD beside the job's {est.job_cost_usd:.6g} USD"
        + (f"; {est.left_out} left out (unfinished, failed or cut off)" if est.left_out else "")
    ]
    for r in est.rows:
        version = "herd file" if r.version is None else f"policy version {r.version}"
        against = "right" if r.measure == "accuracy" else f"agree with {a.reference}"
        promised = (
            f"; promised {r.promised:.3f}"
            if r.promised is not None
            else f"; calibration's held-out low {r.checked:.3f}"
            if r.checked is not None
            else "; no promise to check against"
        )
        above = "the promise" if r.basis == "promise" else "the calibration's held-out interval"
        flag = f"  DROP: {above} lies above the interval" if r.drop else ""
        out.append(
            f"  {version}: {r.measure} {r.estimate:.3f} [{r.low:.3f}, {r.high:.3f}] "
            f"({r.hits} of {r.prompts} {against}; {est.level:.0%} Clopper-Pearson){promised}{flag}"
        )
        if r.reference_accuracy is not None:
            out.append(f"    {a.reference} alone: accuracy {r.reference_accuracy:.3f} on the same prompts")
        out.append(f"    promise: {r.promise}")
    return out

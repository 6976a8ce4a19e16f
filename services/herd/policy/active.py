"""Which rule decides a model's answer on a live prompt: the task's active policy version, else the herd file.

`herd calibrate` records policies as versions in Postgres (`policies`, `active_policies`, migration
0005); a worker reads the active version of a task at most once per `ttl_s` (default 30 s), so a new
version or a rollback reaches every worker within that time without a restart and without a query
per attempt. A `p_correct` threshold is evaluated with the policy's isotonic breakpoints and
numpy.interp (herd.policy.spec.CalibrationMap): plain numbers stored in the text, never pickle.

Per (task, model) the `Rule` says: the next model (None: keep the answer), the measure and threshold,
how many refinement rounds the model runs, and the version that decided (None: the herd file). A model
the active policy does not name (a prompt already past it when a version changed) follows the herd file.
A policy whose next model the herd file no longer defines gives a Rule with `stale` set: the pipeline
fails an escalation there with that reason rather than send it to a queue no worker reads
(herd/herdfile/references.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import psycopg

from herd.herdfile.model import HerdConfig
from herd.herdfile.references import StaleReference, stale_reference
from herd.policy.spec import CalibrationMap, Policy, Tier, is_confidence

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
ValueOf = Callable[[str], float | None]


@dataclass(frozen=True)
class Rule:
    """How `model` decides on one prompt. `rounds`: refinement rounds before the deciding answer."""

    model: str
    next: str | None
    measure: str
    threshold: float | None
    rounds: int
    version: int | None = None
    calibration: CalibrationMap | None = None
    stale: StaleReference | None = None  # `next` is a model the herd file does not define

    def value(self, value_of: ValueOf) -> float | None:
        """The rule's measure for an answer whose raw measures `value_of(name)` gives (None: missing)."""
        if self.measure != "p_correct":
            return value_of(self.measure)
        if self.calibration is None:
            return None
        raw = value_of(self.calibration.measure)
        if raw is None or math.isnan(raw):
            return None
        return float(self.calibration.apply(np.array([raw]))[0])

    def escalates(self, value_of: ValueOf) -> bool:
        """Same rule as herd.herdfile.model.TaskTier.escalates and herd.policy.spec.Tier.escalates: below
        the threshold for a confidence, above it for an uncertainty; a missing value never escalates."""
        value = self.value(value_of)
        if self.next is None or self.threshold is None or value is None or math.isnan(value):
            return False
        return value < self.threshold if is_confidence(self.measure) else value > self.threshold

    def confidence(self, value_of: ValueOf) -> float | None:
        """The measure oriented so that lower means less likely correct (budget release order)."""
        value = self.value(value_of)
        if value is None or math.isnan(value):
            return None
        return value if is_confidence(self.measure) else -value


def herd_rounds(herd: HerdConfig, model: str) -> int:
    refine = herd.models[model].refine
    return refine.rounds if refine is not None else 0


def rule_for(herd: HerdConfig, task: str, model: str, active: tuple[int, Policy] | None) -> Rule:
    """The rule for `model` on `task`: from the active (version, policy) when it names the model."""
    if active is not None:
        version, policy = active
        models = policy.models
        if model in models:
            i = models.index(model)
            tier = policy.tiers[i]
            next_model = models[i + 1] if i + 1 < len(models) else None
            return Rule(
                model=model,
                next=next_model,
                measure=tier.measure or "first_token_margin",
                threshold=tier.threshold,
                rounds=herd_rounds(herd, model) if tier.refine else 0,
                version=version,
                calibration=policy.calibration.get(model),
                stale=None if next_model is None else stale_policy(herd, task, version, [next_model]),
            )
    step = herd.tier(task, model)
    return Rule(model, step.next, step.measure, step.threshold, herd_rounds(herd, model))


def stale_policy(
    herd: HerdConfig, task: str, version: int, models: list[str], active: bool = True
) -> StaleReference | None:
    """The shared check (herd/herdfile/references.py) for models named by policy `version` of `task`."""
    if task in herd.tasks and all(m in herd.models for m in models):
        return None  # the common case, once per message: no strings built
    holder = f"{'the active ' if active else ''}policy v{version} of task {task!r}"
    return stale_reference(
        herd,
        "policy",
        holder,
        task,
        models,
        hint=f"activate another version, or `herd policy deactivate --task {task}`",
    )


def herd_policy(herd: HerdConfig, task: str) -> Policy:
    """The herd file's own cascade for `task` as a Policy (refinement on where the model enables it)."""
    steps = herd.route(task)
    tiers = [
        Tier(
            model=s.model,
            measure=s.measure if i < len(steps) - 1 else None,
            threshold=s.threshold if i < len(steps) - 1 else None,
            refine=herd.models[s.model].refine is not None,
        )
        for i, s in enumerate(steps)
    ]
    return Policy(task=task, entry=steps[0].model, tiers=tiers)


def load_active(conn: psycopg.Connection, task: str) -> tuple[int, Policy] | None:
    """The active (version, policy) of `task`, or None when the herd file decides."""
    row = conn.execute(
        """SELECT p.version, p.text FROM active_policies a JOIN policies p ON p.id = a.policy_id
           WHERE a.task = %s""",
        (task,),
    ).fetchone()
    return None if row is None else (int(row[0]), Policy.from_text(row[1]))


class ActivePolicies:
    """Per-process cache of each task's active policy, refreshed at most every `ttl_s` seconds.

    Thread-safe enough for Celery's thread pool: a concurrent refresh runs the query twice, harmless.
    """

    def __init__(self, connect: Connect, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.connect = connect
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[float, tuple[int, Policy] | None]] = {}
        self._lock = threading.Lock()

    def get(self, task: str) -> tuple[int, Policy] | None:
        now = self.clock()
        with self._lock:
            hit = self._cache.get(task)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        with self.connect() as conn:
            active = load_active(conn, task)
        with self._lock:
            self._cache[task] = (now, active)
        return active

    def rule(self, herd: HerdConfig, task: str, model: str) -> Rule:
        return rule_for(herd, task, model, self.get(task))

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

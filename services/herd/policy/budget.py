"""Job budgets: which uncertain answers escalate when a job's attributed cost is capped.

Two helpers, both pure:

- `allocate` (bulk, the job's candidates held until the end): escalate in order of ascending
  confidence (calibrated P(correct) first; ties by prompt id), each while the expected spend so far
  is still below the budget. The set is a prefix of that order, so a less confident candidate is
  never passed over for a more confident one, and the spend exceeds the budget by at most the
  escalation cost of the last candidate taken: never by more than one attempt. (A knapsack that
  skips an expensive candidate to fit cheaper ones would break "least confident first".)
  FrugalGPT (Chen, Zaharia & Zou 2023) maximises quality under a cost budget with thresholds; with
  calibrated P(correct) escalating the least likely correct first is the greedy form of that.

- `StreamingBudget` (live, candidates arrive one by one and cannot wait): a candidate escalates iff
  budget remains and, applying the bulk rule to the candidates seen so far scaled up to the whole
  job, it would be taken: the expected cost of the seen candidates strictly less confident than it,
  times expected_candidates / seen, is below the budget. That is "p below the threshold at which the
  budget runs out, estimated from the distribution so far". Early estimates are noisy; the hard cap
  (reserve before escalating, escalate only while reserved < budget) holds regardless.

Confidence is anything where lower means less likely correct: P(correct), the first-token margin,
or a negated uncertainty. NaN (a missing value) never escalates, as in the live pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Allocation:
    """`escalate`: (n,) bool in the candidates' order; `order`: candidate indices in the order they
    were considered; `spent_usd`: expected cost of the escalations; `threshold`: confidence of the
    last candidate taken (-inf if none); `held`: candidates kept at their entry answer."""

    escalate: np.ndarray
    order: np.ndarray
    spent_usd: float
    budget_usd: float
    threshold: float
    held: int


def allocate(
    prompt_ids: np.ndarray,
    confidence: np.ndarray,
    cost_usd: np.ndarray,
    budget_usd: float,
    below: float | None = None,
) -> Allocation:
    """Pick the candidates to escalate under `budget_usd` (USD), least confident first.

    `prompt_ids`, `confidence`, `cost_usd` (expected escalation cost, USD): shape (n,). `below`:
    only candidates with confidence < below are eligible (the policy's threshold), default all.
    Guarantee: spent_usd <= budget_usd + max cost of one candidate. Raises ValueError on mismatched
    shapes, a negative budget or a negative/non-finite cost.
    """
    ids, conf, cost = (np.asarray(a) for a in (prompt_ids, confidence, cost_usd))
    if not ids.shape == conf.shape == cost.shape or ids.ndim != 1:
        shapes = f"{ids.shape}, {conf.shape}, {cost.shape}"
        raise ValueError(f"prompt_ids, confidence, cost_usd must share one shape (n,), got {shapes}")
    if budget_usd < 0:
        raise ValueError(f"budget_usd must be >= 0, got {budget_usd}")
    if not np.isfinite(cost).all() or (cost < 0).any():
        raise ValueError("cost_usd must be finite and >= 0")
    eligible = ~np.isnan(conf.astype(float))
    if below is not None:
        eligible &= conf < below
    candidates = np.flatnonzero(eligible)
    order = candidates[np.lexsort((ids[candidates], conf[candidates]))]
    before = np.cumsum(cost[order]) - cost[order]
    taken = order[before < budget_usd]
    escalate = np.zeros(len(ids), dtype=bool)
    escalate[taken] = True
    threshold = float(conf[taken[-1]]) if taken.size else float("-inf")
    return Allocation(
        escalate, order, float(cost[taken].sum()), float(budget_usd), threshold, int(len(order) - taken.size)
    )


class StreamingBudget:
    """Live budget for candidates arriving one at a time (see the module docstring).

    `expected_candidates`: how many escalation candidates the whole job should produce (e.g. job size
    × the candidate share seen in calibration); when more arrive, the seen count is used instead.
    `offer` decides and reserves the expected cost; `settle` replaces it with the actual cost.

    The running estimate rests on few candidates at first (the very first always looks least
    confident). `prior_threshold`, e.g. `allocate`'s threshold on the calibration job, is used
    instead for the first `warmup` candidates when given.
    """

    def __init__(
        self,
        budget_usd: float,
        expected_candidates: int,
        prior_threshold: float | None = None,
        warmup: int = 50,
    ) -> None:
        if budget_usd < 0 or expected_candidates < 1:
            raise ValueError("budget_usd must be >= 0 and expected_candidates >= 1")
        self.budget_usd = float(budget_usd)
        self.expected = int(expected_candidates)
        self.spent_usd = 0.0
        self._conf = np.empty(1024)
        self._cost = np.empty(1024)
        self.seen = 0
        self.escalated = 0
        self.prior_threshold = prior_threshold
        self.warmup = warmup

    @property
    def remaining_usd(self) -> float:
        return self.budget_usd - self.spent_usd

    def threshold(self) -> float:
        """Current estimate of the confidence below which candidates escalate (+inf: all, -inf: none)."""
        if self.seen == 0:
            return float("inf")
        conf, cost = self._conf[: self.seen], self._cost[: self.seen]
        order = np.argsort(conf, kind="stable")
        scaled = (np.cumsum(cost[order]) - cost[order]) * self._scale()
        over = np.flatnonzero(scaled >= self.budget_usd)
        return float(conf[order][over[0]]) if over.size else float("inf")

    def offer(self, confidence: float, cost_usd: float) -> bool:
        """Record one candidate; True (and `cost_usd` reserved) iff it escalates. NaN never escalates."""
        if np.isnan(confidence):
            return False
        if self.seen == len(self._conf):
            self._conf = np.concatenate([self._conf, np.empty(len(self._conf))])
            self._cost = np.concatenate([self._cost, np.empty(len(self._cost))])
        self._conf[self.seen], self._cost[self.seen] = confidence, cost_usd
        self.seen += 1
        if self.prior_threshold is not None and self.seen <= self.warmup:
            wanted = confidence < self.prior_threshold
        else:
            conf, cost = self._conf[: self.seen], self._cost[: self.seen]
            wanted = float(cost[conf < confidence].sum()) * self._scale() < self.budget_usd
        if wanted and self.spent_usd < self.budget_usd:
            self.spent_usd += cost_usd
            self.escalated += 1
            return True
        return False

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Replace a reservation by the attempt's actual attributed cost."""
        self.spent_usd += actual_usd - reserved_usd

    def _scale(self) -> float:
        return max(self.expected, self.seen) / self.seen

"""Which held escalation candidates of a budget job to release now, and what to reserve for each: pure.

herd/policy/job_budget.py reads the job from the ledger and calls `plan_release` under the job's advisory
lock; this module only decides. The rules, and why:

- **Each escalation is estimated from its own size**, its prompt tokens: `estimates` gives it the
  cost of the cheapest escalation measured on its next model in this job (a prompt whose work there is
  over) that was at least as long. One prompt's cost says little about a ten-times longer one; a
  longer prompt costing at least as much holds for any model (prefill and decode grow with tokens),
  so the estimate bounds the cost whatever the shape of cost against tokens.
- **Nothing is extrapolated.** A candidate longer than every measured prompt on its model (or any
  candidate, while nothing is measured) is a probe: it goes alone (nothing else of the job in flight)
  and reserves the whole remaining budget, so nothing else is released until its actual cost is known.
- **A young estimate releases little.** No more escalations are in flight to a model than prompts
  have been measured on it (1, then 2, 4, ...), so an estimate from few prompts can be wrong about
  few escalations at a time.
- **Reserve before releasing, least confident first.** Candidates are taken in order while
  spent + reserved (in flight and newly taken) is below the budget; the first that may not go stops
  the release, so a more confident candidate never overtakes a less confident one.
- **Keep for budget only on actual costs.** When the budget is used up and nothing is in flight, the
  remaining candidates keep their answers; while something is in flight, they wait for its actual
  cost (its reservation may have been too high).

The bound this gives (docs/policy.md, "Job budgets"): the job's attributed cost exceeds the budget by
at most the cost of the last escalation taken, plus what escalations in flight with it cost beyond
their estimates: nothing, when no prompt costs less than a shorter one on the same model.
`tests/unit/policy/test_release.py` measures it over random cost spreads and worker counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Measured:
    """What a job knows of escalations to one model: `sizes` (prompt tokens) and `costs` (USD) of the
    prompts whose work on it is over, and `in_flight`, how many released there are not yet over."""

    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    costs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    in_flight: int = 0

    @property
    def count(self) -> int:
        return len(self.costs)


NOTHING = Measured()


def estimates(sizes: Sequence[float | None], measured: Measured) -> np.ndarray:
    """(n,) estimated cost (USD) of escalations of `sizes` prompt tokens to a model with `measured`
    escalations: the least any measured prompt at least as long cost; NaN where that needs
    extrapolating (a probe: nothing measured, or longer than every measured prompt). An unknown size
    (None) takes the most any measured prompt cost. O((n + m) log m)."""
    size = np.array([np.nan if s is None else float(s) for s in sizes], dtype=float)
    out = np.full(len(size), np.nan)
    if measured.count == 0:
        return out
    out[np.isnan(size)] = float(measured.costs.max())
    known = measured.sizes > 0
    if not known.any():
        return out
    by_size = np.argsort(measured.sizes[known], kind="stable")
    longer = measured.sizes[known][by_size]
    # cheapest[j]: the least cost among the measured prompts at position j and after (all as long).
    cheapest = np.minimum.accumulate(measured.costs[known][by_size][::-1])[::-1]
    ok = ~np.isnan(size)
    at = np.searchsorted(longer, size[ok], side="left")  # the first measured prompt >= the size
    est = np.full(int(ok.sum()), np.nan)
    inside = at < len(longer)
    est[inside] = cheapest[at[inside]] * _shortfall(cheapest, measured.costs[known][by_size])
    out[ok] = est
    return out


def _shortfall(cheapest: np.ndarray, costs: np.ndarray) -> float:
    """How far the rule fell short on the measured escalations themselves (>= 1): the most any of them
    cost over the cheapest measured one longer than it (sorted by size). 1 when no prompt cost more than
    a longer one; above it, costs vary around their length (answers of different lengths), and every
    estimate is scaled up by it: a reconciliation of the rule with the actual costs."""
    if len(costs) < 2:
        return 1.0
    return max(1.0, float((costs[:-1] / np.maximum(cheapest[1:], 1e-300)).max()))


@dataclass(frozen=True)
class Release:
    """`take`: (candidate index, reserved USD) to release now, in order; `keep`: candidate indices to
    keep at their current answer for lack of budget; every other candidate stays held."""

    take: list[tuple[int, float]]
    keep: list[int]


def plan_release(
    targets: Sequence[str],
    sizes: Sequence[float | None],
    measured: Mapping[str, Measured],
    budget_usd: float,
    spent_usd: float,
    reserved_usd: float,
) -> Release:
    """Plan one release (see the module docstring).

    `targets[i]`, `sizes[i]`: candidate i's next model and prompt tokens (None: unknown), candidates
    in release order (least confident first); `measured`: per model; `spent_usd`: the job's actual
    cost so far; `reserved_usd`: the reservations of its escalations in flight. Raises ValueError on
    mismatched lengths or a negative budget."""
    if len(targets) != len(sizes):
        raise ValueError(f"targets and sizes differ in length: {len(targets)} != {len(sizes)}")
    if budget_usd < 0:
        raise ValueError(f"budget_usd must be >= 0, got {budget_usd}")
    room = budget_usd - spent_usd - reserved_usd
    in_flight = sum(m.in_flight for m in measured.values())
    flying = {model: m.in_flight for model, m in measured.items()}
    cost = np.full(len(targets), np.nan)
    for model in set(targets):
        at = [i for i, t in enumerate(targets) if t == model]
        cost[at] = estimates([sizes[i] for i in at], measured.get(model, NOTHING))
    take: list[tuple[int, float]] = []
    for i, target in enumerate(targets):
        if room <= 0:
            break  # used up (counting reservations): stop here
        m = measured.get(target, NOTHING)
        if np.isnan(cost[i]):  # a probe goes alone and holds the whole remaining budget until it is known
            if not take and in_flight == 0:
                take.append((i, float(room)))
            break
        if flying.get(target, 0) >= max(1, m.count):
            break  # a young estimate: no more in flight than measured
        take.append((i, float(cost[i])))
        flying[target] = flying.get(target, 0) + 1
        room -= float(cost[i])
    used_up = room <= 0 and len(take) < len(targets)
    keep = list(range(len(take), len(targets))) if used_up and not take and in_flight == 0 else []
    return Release(take, keep)

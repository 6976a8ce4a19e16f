"""The budget release (herd/policy/release.py) over random cost spreads and worker counts: a seeded
discrete-event simulation of a budget job's escalations, measuring how far the spend goes past the cap.

Each seed draws a job: candidates' prompt lengths (log-normal, spreads from equal to 1:10^4), a cost
against length of any increasing shape (a fixed part plus length^gamma, gamma 0.3 to 2.5: sublinear to
superlinear), the confidence order unrelated to length, a budget between 2% and 90% of what escalating
everything would cost, and 1 to 16 workers running the released escalations concurrently (each takes
time in proportion to its cost, at its own speed). The release is called as the pipeline calls it:
after every escalation ends, with the job's actual spend and the reservations in flight.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import pytest

from herd.policy.release import Measured, estimates, plan_release

SEEDS = 500


@dataclass(frozen=True)
class Run:
    spent: float
    budget: float
    largest: float  # the most one escalation of the job cost (escalated or not)
    escalated: int
    kept: int
    n: int

    @property
    def over(self) -> float:
        """The spend past the budget, in units of the job's most expensive escalation."""
        return max(self.spent - self.budget, 0.0) / self.largest


def job(rng: np.random.Generator, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(sizes, costs in release order, budget, workers) of one random budget job."""
    n = int(rng.integers(2, 80))
    sizes = np.maximum(1.0, np.round(rng.lognormal(np.log(300), rng.uniform(0.0, 2.3), n)))
    gamma = rng.uniform(0.3, 2.5)
    fixed = rng.uniform(0.0, 1.0) * 300**gamma
    costs = (fixed + sizes**gamma) * 1e-6
    if noise:
        costs *= rng.uniform(1 - noise, 1 + noise, n)
    budget = float(costs.sum() * rng.uniform(0.02, 0.9))
    return sizes, costs, budget, int(rng.integers(1, 17))


def simulate(
    rng: np.random.Generator, sizes: np.ndarray, costs: np.ndarray, budget: float, workers: int
) -> Run:
    held = list(range(len(sizes)))  # release order: least confident first
    waiting: list[int] = []  # released, not yet started by a worker
    running: list[tuple[float, int]] = []  # (end time, candidate)
    reserved: dict[int, float] = {}
    measured_sizes: list[float] = []
    measured_costs: list[float] = []
    spent, now, kept, escalated = 0.0, 0.0, 0, 0

    def release() -> None:
        nonlocal kept
        m = Measured(np.array(measured_sizes), np.array(measured_costs), in_flight=len(reserved))
        plan = plan_release(
            ["large"] * len(held),
            [float(sizes[i]) for i in held],
            {"large": m},
            budget,
            spent,
            sum(reserved.values()),
        )
        for k, cost in plan.take:
            reserved[held[k]] = cost
            waiting.append(held[k])
        kept += len(plan.keep)
        gone = {k for k, _ in plan.take} | set(plan.keep)
        held[:] = [c for k, c in enumerate(held) if k not in gone]

    release()
    speed = rng.uniform(0.5, 2.0, workers)
    free = list(range(workers))
    busy: dict[int, int] = {}
    while waiting or running:
        while waiting and free:
            c, w = waiting.pop(0), free.pop()
            busy[c] = w
            heapq.heappush(running, (now + costs[c] / speed[w], c))
        now, c = heapq.heappop(running)
        free.append(busy.pop(c))
        spent += float(costs[c])
        escalated += 1
        measured_sizes.append(float(sizes[c]))
        measured_costs.append(float(costs[c]))
        del reserved[c]
        release()
        assert held == [] or running or waiting or kept, "the release stalled"
    assert not held, "candidates left held with nothing in flight"
    return Run(spent, budget, float(costs.max()), escalated, kept, len(sizes))


def test_the_estimate_is_the_cheapest_measured_escalation_at_least_as_long() -> None:
    m = Measured(np.array([10.0, 100.0, 50.0]), np.array([1.0, 20.0, 3.0]))
    got = estimates([5, 10, 11, 50, 60, 100, 101, None], m)
    assert np.array_equal(got, [1.0, 1.0, 3.0, 3.0, 20.0, 20.0, np.nan, 20.0], equal_nan=True)
    assert np.isnan(estimates([5], Measured())).all()


def test_a_probe_goes_alone_and_reserves_what_is_left() -> None:
    m = Measured(np.array([10.0]), np.array([1.0]), in_flight=1)
    assert plan_release(["l", "l"], [50, 5], {"l": m}, 10.0, 2.0, 1.0).take == []  # waits for the one
    alone = plan_release(["l", "l"], [50, 5], {"l": Measured(m.sizes, m.costs)}, 10.0, 2.0, 0.0)
    assert alone.take == [(0, 8.0)] and alone.keep == []
    # A young estimate: one measured, so one in flight; then the budget: kept only once nothing flies.
    fresh = {"l": Measured(m.sizes, m.costs)}
    assert plan_release(["l"] * 3, [5, 5, 5], fresh, 10.0, 2.0, 0.0).take == [(0, 1.0)]
    assert plan_release(["l"] * 3, [5, 5, 5], {"l": m}, 3.0, 2.0, 1.0).keep == []
    assert plan_release(["l"] * 3, [5, 5, 5], fresh, 3.0, 3.0, 0.0).keep == [0, 1, 2]


def test_the_cap_holds_within_one_escalation_over_random_cost_spreads_and_worker_counts() -> None:
    """Costs that grow with length (any shape): over SEEDS jobs the spend never passes the budget by
    more than the job's most expensive escalation, and the budget buys escalations (not a cap held by
    never releasing)."""
    runs = [simulate(rng, *job(rng)) for rng in map(np.random.default_rng, range(SEEDS))]
    worst = max(r.over for r in runs)
    used = np.median([min(r.spent / r.budget, 1.0) for r in runs])
    print(f"{SEEDS} jobs: worst spend past the budget {worst:.3f} escalation; median budget used {used:.1%}")
    assert worst <= 1.0
    assert used > 0.7  # the reservations do not leave most of the budget unspent
    assert sum(r.escalated for r in runs) > 0.2 * sum(r.n for r in runs)


@pytest.mark.parametrize("noise", [0.1, 0.3])
def test_with_costs_that_vary_around_their_length_the_cap_still_holds(noise: float) -> None:
    """Costs ±noise around an increasing shape (answers of different lengths): a shorter prompt may cost
    more than a longer one, so the bare estimate can fall short; scaled by the shortfall measured on the
    job's own escalations, it holds the spend within one escalation of the budget over SEEDS jobs."""
    runs = [simulate(rng, *job(rng, noise)) for rng in map(np.random.default_rng, range(SEEDS))]
    over = np.array([r.over for r in runs])
    q99 = np.quantile(over, 0.99)
    print(f"noise {noise:.0%}: worst spend past the budget {over.max():.3f}, 99th percentile {q99:.3f}")
    assert over.max() <= 1.0

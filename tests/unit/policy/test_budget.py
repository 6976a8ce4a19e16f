from __future__ import annotations

import numpy as np
import pytest

from herd.policy.budget import StreamingBudget, allocate


@pytest.mark.parametrize("budget", [0.0, 1e-4, 3e-3, 0.05, 1.0])
def test_budget_never_exceeded_by_more_than_one_attempt_least_confident_first(budget: float) -> None:
    rng = np.random.default_rng(7)
    n = 2000
    p = rng.random(n)
    cost = rng.uniform(1e-5, 5e-5, n)
    a = allocate(np.arange(n), p, cost, budget)
    assert a.spent_usd <= budget + cost.max()
    assert a.spent_usd == pytest.approx(cost[a.escalate].sum())
    if a.escalate.any() and not a.escalate.all():
        assert p[a.escalate].max() < p[~a.escalate].min()  # a prefix in confidence order
        assert a.spent_usd >= budget  # stopped only because the budget ran out
    assert a.held == n - a.escalate.sum()


def test_zero_budget_nan_and_eligibility() -> None:
    p = np.array([0.1, np.nan, 0.3, 0.9])
    cost = np.full(4, 1.0)
    assert not allocate(np.arange(4), p, cost, 0.0).escalate.any()
    a = allocate(np.arange(4), p, cost, 10.0, below=0.5)
    assert a.escalate.tolist() == [True, False, True, False]
    assert a.threshold == 0.3
    with pytest.raises(ValueError, match="shape"):
        allocate(np.arange(3), p, cost, 1.0)


def test_ties_break_by_prompt_id() -> None:
    a = allocate(np.array([5, 2, 9]), np.full(3, 0.2), np.ones(3), 1.5)
    assert a.escalate.tolist() == [True, True, False]  # ids 2 then 5


def test_streaming_budget_caps_spend_and_prefers_low_confidence() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    p = rng.random(n)
    cost = rng.uniform(1e-5, 2e-5, n)
    budget = 0.01
    stream = StreamingBudget(budget, expected_candidates=n)
    taken = np.array([stream.offer(pi, ci) for pi, ci in zip(p, cost, strict=True)])
    assert stream.spent_usd <= budget + cost.max()
    assert stream.spent_usd == pytest.approx(cost[taken].sum())
    ideal = allocate(np.arange(n), p, cost, budget)
    assert np.median(p[taken]) < 2 * np.median(p[ideal.escalate]) + 0.05
    assert stream.threshold() == pytest.approx(ideal.threshold, abs=0.02)
    assert not stream.offer(float("nan"), 1.0)


def test_streaming_settle_and_prior() -> None:
    stream = StreamingBudget(1.0, expected_candidates=100, prior_threshold=0.2, warmup=10)
    assert not stream.offer(0.5, 0.1)  # above the prior during warm-up
    assert stream.offer(0.1, 0.1)
    stream.settle(0.1, 0.95)
    assert stream.remaining_usd == pytest.approx(0.05)
    assert stream.offer(0.0, 0.3)  # budget remains: the one attempt that may overshoot
    assert not stream.offer(0.0, 0.3)

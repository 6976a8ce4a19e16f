"""The fault suite's schedule (benchmarks/_lib/faults_plan.py): the empty Redis and the partition are
drawn after the older faults, so a seed keeps its other faults where they were, and they land where
the suite says (the empty Redis in the first half of the fault window, the partition in the second)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks._lib import faults_netns
from benchmarks._lib.faults_plan import SHORT, Plan, schedule


@pytest.mark.parametrize("seed", range(20))
def test_new_faults_leave_the_others_where_they_were(seed: int) -> None:
    plan = Plan(seed=seed)
    old = schedule(replace(plan, empty_redis=False, partition_s=0.0))
    new = schedule(plan)
    assert [(e.action, e.target, e.after) for e in old] == [
        (e.action, e.target, e.after) for e in new if e.action not in ("kill-redis-empty", "cut-network")
    ]
    (empty,) = [e for e in new if e.action == "kill-redis-empty"]
    (cut,) = [e for e in new if e.action == "cut-network"]
    mid = (plan.faults_from + plan.faults_until) / 2
    assert empty.after is not None and plan.faults_from <= empty.after <= mid
    assert empty.down_s == plan.service_down_s
    assert cut.after is not None and mid <= cut.after <= plan.faults_until
    assert cut.down_s == plan.partition_s


def test_the_short_plan_has_both_faults() -> None:
    actions = [e.action for e in schedule(replace(SHORT))]
    assert "kill-redis-empty" in actions and "cut-network" in actions
    assert SHORT.partition_s > 0 and SHORT.empty_redis


def test_the_partition_says_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults_netns.os, "geteuid", lambda: 1000)
    assert faults_netns.Netlab.unavailable() == "network namespaces need root"
    monkeypatch.setattr(faults_netns.os, "geteuid", lambda: 0)
    which = {"ip": "/sbin/ip"}.get
    monkeypatch.setattr(faults_netns.shutil, "which", which)
    assert faults_netns.Netlab.unavailable() == "socat not found on PATH"

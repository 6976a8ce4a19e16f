"""herd.policy's core stays pure, and its escalation rule is the live pipeline's.

The package is also the one home of policy and router versions, calibration jobs and job budgets:
the modules in STORAGE read and write them in Postgres; every other module (a new one too) is pure."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from herd.herdfile.model import Measure, TaskTier
from herd.policy.spec import RAW_MEASURES, Tier

POLICY = Path(__file__).resolve().parents[3] / "services" / "herd" / "policy"
# Where the package meets the ledger: versions, the active policies, calibration jobs, job budgets,
# and the workflows of `herd calibrate` and `herd router train`.
STORAGE = {
    "active.py", "audit_calibration.py", "calibration.py", "job_budget.py", "versioned.py", "versions.py",
    "workflow.py", "router/versions.py", "router/workflow.py",
}  # fmt: skip
PURE = sorted(p for p in POLICY.glob("*.py") if p.name not in STORAGE)
ALLOWED = {
    "__future__",
    "collections",
    "dataclasses",
    "itertools",
    "math",
    "typing",
    "numpy",
    "scipy",
    "sklearn",
    "pydantic",
    "yaml",
}


def test_every_storage_module_exists() -> None:
    # Guards the exclusion list: a module renamed away from it would otherwise escape both tests.
    assert {p.relative_to(POLICY).as_posix() for p in POLICY.rglob("*.py")} >= STORAGE


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.relative_to(POLICY).as_posix())
def test_the_core_imports_only_stdlib_numpy_scipy_sklearn_pydantic_yaml_and_itself(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            root = name.split(".")[0]
            # herd.errors, the error tree, is a leaf that imports nothing: the one Herd module allowed.
            allowed = root in ALLOWED or name.startswith("herd.policy") or name == "herd.errors"
            assert allowed, f"{path.name} imports {name}"


@pytest.mark.parametrize("measure", RAW_MEASURES)
def test_tier_escalates_exactly_when_the_live_step_does(measure: Measure) -> None:
    for threshold in (0.0, 0.3, 1.0):
        step = TaskTier(model="a", prompt_mode="chat", next="b", measure=measure, threshold=threshold)
        tier = Tier(model="a", measure=measure, threshold=threshold)  # type: ignore[arg-type]
        for value in (None, math.nan, -1.0, 0.0, 0.3, 0.2999, 0.3001, 1.0, 5.0):
            live = step.escalates(value)
            replayed = bool(tier.escalates(np.array([math.nan if value is None else value]))[0])
            assert live == replayed, (measure, threshold, value)

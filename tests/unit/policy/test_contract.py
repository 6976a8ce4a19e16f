"""herd.policy stays pure, and its escalation rule is the live pipeline's."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from herd.herdfile.model import Measure, TaskTier
from herd.policy.spec import RAW_MEASURES, Tier

POLICY = Path(__file__).resolve().parents[3] / "services" / "herd" / "policy"
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


@pytest.mark.parametrize("path", sorted(POLICY.glob("*.py")), ids=lambda p: p.name)
def test_imports_only_stdlib_numpy_scipy_sklearn_pydantic_yaml_and_itself(path: Path) -> None:
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

"""herd.vocabulary: the words every layer shares, in a module that imports nothing from Herd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from herd.vocabulary import FINISHED, PromptState, Stage, StepKey

REPO = Path(__file__).resolve().parents[2]


def test_the_vocabulary_imports_nothing_from_herd() -> None:
    code = "import sys, herd.vocabulary; print(sorted(m for m in sys.modules if m.startswith('herd')))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['herd', 'herd.vocabulary']"


def test_a_step_key_defaults_to_a_models_answer_and_compares_by_value() -> None:
    assert StepKey("small") == StepKey("small", Stage.ANSWER, 0)
    assert StepKey("small", "critique", 1) != StepKey("small", "refine", 1)
    assert hash(StepKey("small", "refine", 2)) == hash(StepKey("small", Stage.REFINE, 2))


def test_the_members_are_the_strings_the_ledger_stores() -> None:
    assert Stage.COMBINE == "combine" and PromptState.HELD == "held"
    assert set(FINISHED) == {"done", "failed"}

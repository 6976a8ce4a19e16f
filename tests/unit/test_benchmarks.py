"""Every benchmark imports and parses its arguments (`--help`), runs as `python -m benchmarks.<name>`,
and is listed, with its command, in docs/benchmarks.md. The benchmarks themselves measure speed and
are run by hand (docs/benchmarks.md); tests/integration/test_faults.py runs the fault suite's short
version."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cli_startup, public_outcomes, throughput
from benchmarks.__main__ import entries
from tests.support.harness import REPO

NAMES = sorted(entries())


def test_the_benchmarks_are_found() -> None:
    assert {"throughput", "faults", "scale_out", "ledger_bench"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m benchmarks.{name}")


@pytest.mark.parametrize("name", NAMES)
def test_docs_give_the_command(name: str) -> None:
    assert f"python -m benchmarks.{name}" in (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")


def test_python_m_benchmarks_lists_them() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(NAMES)


def test_a_bad_baseline_src_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        throughput.main(["--baseline-src", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"{tmp_path} is not a Herd source tree" in capsys.readouterr().err


def test_cli_startup_times_both_commands_beside_the_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    # This checkout as its own baseline, one run each: the table's shape, not its speed.
    assert cli_startup.main(["--runs", "1", "--baseline-src", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert f"baseline: {REPO}; 1 runs each" in out
    rows = {line.split("  ")[0]: line.split()[-6:] for line in out.splitlines() if line.startswith("herd ")}
    assert set(rows) == {"herd --help", "herd status --help"}
    for figures in rows.values():
        wall, base_wall, ratio, cpu, base_cpu, cpu_ratio = map(float, figures)
        assert wall > 0 and base_wall > 0 and cpu > 0 and base_cpu > 0
        assert ratio == pytest.approx(wall / base_wall, abs=0.01)


def test_cli_startup_refuses_a_ref_git_does_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_startup.main(["--runs", "1", "--baseline-ref", "no-such-ref-anywhere"])
    assert exit_.value.code == 2
    assert "--baseline-ref no-such-ref-anywhere: " in capsys.readouterr().err


def test_public_outcomes_on_the_sample_prints_each_model_the_oracle_and_herds_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The checked-in 300-prompt sample of LLMRouter's data: the figures are recomputed here from the
    # JSON itself, independently of Herd's replay, on the same seeded held-out rows.
    assert (
        public_outcomes.main(
            ["--data", "sample", "--calibration", "150", "--seeds", "1", "--judge-error", "0.2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    items = json.loads((public_outcomes.SAMPLE / "train.json").read_text(encoding="utf-8"))
    prices = json.loads((public_outcomes.SAMPLE / "default_llm.json").read_text(encoding="utf-8"))
    models = sorted(items[0]["scores"])
    held = np.sort(np.random.default_rng(0).permutation(len(items))[150:])
    assert f"300 prompts x {len(models)} models" in out
    rows = {line[: line.index("  ")].strip(): line.split() for line in out.splitlines() if "  " in line}
    best = []
    for m in models:
        scores = [items[i]["scores"][m] for i in held]
        tokens = [np.ceil(len(items[i]["question"]) / 4) + 128 for i in held]
        usd = (prices[m]["input_price"] + prices[m]["output_price"]) / 2e6
        quality, cost = map(float, rows[f"{m} alone"][-2:])
        assert quality == pytest.approx(np.mean(scores), abs=1e-4)
        assert cost == pytest.approx(np.mean(tokens) * usd * 1000, rel=1e-3)
        best.append(quality)
    oracle = float(rows["per-prompt oracle"][-2])
    assert oracle == pytest.approx(np.mean([max(items[i]["scores"].values()) for i in held]), abs=1e-4)
    assert oracle > max(best)
    chosen = [line for line in out.splitlines() if ", guarantee " in line or ", point " in line]
    assert len(chosen) == 4  # two targets x two methods
    for line in chosen:
        quality = float(line.split()[-7])
        assert 0.0 <= quality <= oracle + 1e-9
    assert "no router's quality or cost on it" in out


def test_public_outcomes_names_how_to_get_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HERD_BENCH_DATA", raising=False)
    with pytest.raises(SystemExit) as exit_:
        public_outcomes.main([])
    assert exit_.value.code == 2
    assert "git clone https://github.com/ulab-uiuc/LLMRouter" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        public_outcomes.main(["--data", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"{tmp_path}: no train.json or test.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--confidence", "1.5"], "--confidence must lie strictly between 0 and 1"),
        (["--judge-error", "2"], "--judge-error must lie in [0, 1]"),
        (["--calibration", "299"], "--calibration must lie between 1 and 298 for 300 prompts"),
    ],
)
def test_public_outcomes_refuses_bad_arguments_by_name(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        public_outcomes.main(["--data", "sample", "--seeds", "1", "--calibration", "60", *args])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err

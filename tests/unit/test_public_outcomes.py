"""The public outcome data's loader and proxies (benchmarks/_lib/outcomes.py): bad files are refused
by name and item, duplicates are kept once, and the simulated judge errs at the stated rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks._lib.outcomes import OutcomeDataError, calibration_data, judge, load, oracle

PRICES = {"a": {"input_price": 0.1, "output_price": 0.1}, "b": {"input_price": 0.9, "output_price": 0.9}}


def write(folder: Path, items: object, prices: object = PRICES, name: str = "train.json") -> Path:
    (folder / name).write_text(json.dumps(items) if not isinstance(items, str) else items, encoding="utf-8")
    (folder / "default_llm.json").write_text(json.dumps(prices), encoding="utf-8")
    return folder


def test_loads_scores_prices_and_keeps_a_repeated_prompt_once(tmp_path: Path) -> None:
    items = [
        {"question": "x" * 40, "scores": {"b": 1.0, "a": 0.0}},
        {"question": "y", "scores": {"a": 1.0, "b": 1.0}},
        {"question": "x" * 40, "scores": {"a": 1.0, "b": 0.0}},
    ]
    got = load(str(write(tmp_path, items)))
    assert got.models == ["a", "b"]
    assert got.scores.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    # 40 characters = 10 tokens in, plus 128 out, at 0.1 and 0.9 USD per million tokens.
    assert got.cost_usd()[0].tolist() == pytest.approx([138 * 0.1e-6, 138 * 0.9e-6])
    quality, cost = oracle(got)
    assert quality == 1.0
    assert cost == pytest.approx((138 * 0.9e-6 + 129 * 0.1e-6) / 2 * 1000)


@pytest.mark.parametrize(
    ("items", "says"),
    [
        ('[{"question": "q",\n "scores": }]', "train.json, line 2: not JSON"),
        ({"question": "q"}, "train.json: expected a list of prompts"),
        ([{"question": "q", "scores": {"a": 1, "b": 2}}], "train.json: item 0: scores.b: expected a score"),
        (
            [{"question": "q", "scores": {"a": 1, "b": 0}}, {"question": "r", "scores": {"a": 1}}],
            "train.json: item 1: scores name ['a'], the first item ['a', 'b']",
        ),
        ([{"question": 3, "scores": {"a": 1, "b": 0}}], "train.json: item 0: expected {'question'"),
    ],
)
def test_a_bad_file_is_refused_naming_file_and_item(tmp_path: Path, items: object, says: str) -> None:
    with pytest.raises(OutcomeDataError) as e:
        load(str(write(tmp_path, items)))
    assert says in str(e.value)


def test_a_model_without_prices_is_refused_by_name(tmp_path: Path) -> None:
    items = [{"question": "q", "scores": {"a": 1, "c": 0}}]
    with pytest.raises(OutcomeDataError, match=r"default_llm.json: no prices for model 'c'"):
        load(str(write(tmp_path, items)))


def test_the_files_are_found_where_a_clone_of_llmrouter_has_them(tmp_path: Path) -> None:
    (tmp_path / "data" / "dcrouter_preprocessed").mkdir(parents=True)
    (tmp_path / "data" / "example_data" / "llm_candidates").mkdir(parents=True)
    items = [{"question": "q", "scores": {"a": 1, "b": 0}}]
    (tmp_path / "data" / "dcrouter_preprocessed" / "test.json").write_text(
        json.dumps(items), encoding="utf-8"
    )
    prices = tmp_path / "data" / "example_data" / "llm_candidates" / "default_llm.json"
    prices.write_text(json.dumps(PRICES), encoding="utf-8")
    assert load(str(tmp_path)).n == 1


@pytest.mark.parametrize("error", [0.0, 0.2, 0.5])
def test_the_judge_errs_at_its_stated_rate(error: float) -> None:
    # 200,000 seeded verdicts: the flip rate lies within 5 standard errors of the stated rate.
    scores = (np.random.default_rng(1).random((20_000, 10)) < 0.6).astype(float)
    conf = judge(scores, error, seed=3)
    assert ((conf >= 0.0) & (conf <= 1.0)).all()
    flipped = float(((conf >= 0.5) != (scores >= 0.5)).mean())
    assert abs(flipped - error) <= 5 * np.sqrt(error * (1 - error) / scores.size) + 1e-12


def test_calibration_data_carries_the_proxy_as_the_confidence_measure(tmp_path: Path) -> None:
    items = [{"question": "q" * i, "scores": {"a": float(i % 2), "b": 1.0}} for i in range(1, 9)]
    got = load(str(write(tmp_path, items)))
    conf = judge(got.scores, 0.0, seed=0)
    data = calibration_data(got, conf)
    assert data.models == ["a", "b"]
    assert np.array_equal(data.plain["a"].measures["first_token_margin"], conf[:, 0])
    assert np.array_equal(data.plain["a"].score, got.scores[:, 0])

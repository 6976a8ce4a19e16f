from __future__ import annotations

import numpy as np
import pytest

from herd.policy.spec import CalibrationMap, Policy, PolicyError, Tier

EXAMPLE = """\
task: sentiment
entry: smollm2
tiers:
  - model: smollm2
    measure: first_token_margin
    threshold: 0.42
    refine: false
  - model: gemma3
"""


def test_text_form_is_the_documented_one_and_round_trips() -> None:
    policy = Policy(
        task="sentiment",
        entry="smollm2",
        tiers=[Tier(model="smollm2", measure="first_token_margin", threshold=0.42), Tier(model="gemma3")],
    )
    assert policy.to_text() == EXAMPLE
    assert Policy.from_text(EXAMPLE) == policy


def test_round_trip_with_calibration_refinement_and_three_tiers() -> None:
    cal = CalibrationMap(measure="mean_entropy", refine=True, x=[0.1, 0.5, 2.0], y=[0.9, 0.6, 0.2])
    policy = Policy(
        task="qa",
        entry="a",
        tiers=[
            Tier(model="a", measure="p_correct", threshold=0.8, refine=True),
            Tier(model="b", measure="mean_nll", threshold=1.5),
            Tier(model="c", refine=True),
        ],
        calibration={"a": cal},
    )
    text = policy.to_text()
    assert Policy.from_text(text) == policy
    assert Policy.from_text(text).to_text() == text
    assert "x: [0.1, 0.5, 2.0]" in text


def test_single_model_policy() -> None:
    policy = Policy.single("t", "m")
    assert policy.to_text() == "task: t\nentry: m\ntiers:\n  - model: m\n"
    assert policy.summary() == "m alone"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (EXAMPLE.replace("0.42", "high"), "tiers[0].threshold"),
        (EXAMPLE.replace("first_token_margin", "vibes"), "tiers[0].measure"),
        (EXAMPLE.replace("    threshold: 0.42\n", ""), "tiers[0].threshold"),
        (EXAMPLE + "    threshold: 0.5\n    measure: mean_nll\n", "tiers[1].threshold"),
        (EXAMPLE.replace("    refine: false", "    refine: false\n    treshold: 1"), "tiers[0].treshold"),
        (EXAMPLE.replace("entry: smollm2", "entry: gemma3"), "tiers[0].model"),
        (EXAMPLE.replace("task: sentiment\n", ""), "task"),
        (EXAMPLE.replace("first_token_margin", "p_correct"), "tiers[0].measure"),
    ],
)
def test_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(PolicyError, match=r"^" + field.replace("[", r"\[").replace("]", r"\]") + ":"):
        Policy.from_text(text)


def test_not_yaml_or_not_a_mapping() -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        Policy.from_text("tiers: [")
    with pytest.raises(PolicyError, match="mapping"):
        Policy.from_text("- a\n- b\n")


def test_escalation_direction_and_missing_values() -> None:
    values = np.array([0.1, 0.5, 0.9, np.nan])
    margin = Tier(model="m", measure="first_token_margin", threshold=0.5)
    entropy = Tier(model="m", measure="mean_entropy", threshold=0.5)
    assert margin.escalates(values).tolist() == [True, False, False, False]
    assert entropy.escalates(values).tolist() == [False, False, True, False]
    assert not Tier(model="m").escalates(values).any()


def test_calibration_map_interpolates_clips_and_keeps_nan() -> None:
    cal = CalibrationMap(measure="first_token_margin", x=[0.2, 0.6], y=[0.3, 0.7])
    assert cal.apply(np.array([0.0, 0.4, 1.0, np.nan])).tolist()[:3] == pytest.approx([0.3, 0.5, 0.7])
    assert np.isnan(cal.apply(np.array([np.nan]))[0])
    with pytest.raises(ValueError, match="ascending"):
        CalibrationMap(measure="first_token_margin", x=[0.6, 0.2], y=[0.3, 0.7])

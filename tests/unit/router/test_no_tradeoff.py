"""APGR and CPT when there is no weak -> strong trade-off: a sentence saying why, null in the figures."""

from __future__ import annotations

import json
import math

import pytest

from herd.policy.router import evaluate, train_held_out
from herd.policy.router.evaluate import figures_json, no_tradeoff
from herd.policy.router.synthetic import topic_data
from herd.reporting.routers import eval_lines

# large is right on three topics, small on one: large is the most accurate.
SKILL = {
    "small": {"finance": 1.0, "sports": 0.0, "science": 0.0, "cooking": 0.0},
    "large": {"finance": 0.0, "sports": 1.0, "science": 1.0, "cooking": 1.0},
}


def held_out(usd: dict[str, float], models: list[str]):  # type: ignore[no-untyped-def]
    texts, data = topic_data(600, seed=3, skill=SKILL, usd=usd, models=models)
    router, _, held = train_held_out(texts, data, seed=1)
    return router, evaluate(router, [texts[i] for i in held], data.take(held))


@pytest.mark.parametrize(
    "usd, models",
    [
        ({"small": 0.0, "large": 0.0}, ["large", "small"]),  # $0 prices: large is weak and strong
        ({"small": 0.0, "large": 0.0}, ["small", "large"]),  # $0 prices: small is "weak" by its place
        ({"small": 0.002, "large": 0.001}, ["small", "large"]),  # the most accurate is the cheapest
    ],
)
def test_no_apgr_or_cpt_when_the_most_accurate_model_is_the_cheapest(usd, models) -> None:  # type: ignore[no-untyped-def]
    router, ev = held_out(usd, models)
    assert ev.strong == "large"
    assert ev.no_tradeoff == "the most accurate model (large) is also the cheapest: route everything to it"
    lines = eval_lines(ev, router)
    assert not any("nan" in line.lower() for line in lines), lines
    assert any(
        line.startswith(
            "APGR, CPT: not defined — the most accurate model (large) is also the "
            "cheapest: route everything to it"
        )
        for line in lines
    ), lines
    figures = figures_json(ev)
    assert figures["apgr"] is None and figures["cpt50"] is None
    assert figures["no_tradeoff"] == ev.no_tradeoff
    json.dumps(figures, allow_nan=False)  # what the routers table stores: never NaN


def test_apgr_and_cpt_with_a_trade_off() -> None:
    router, ev = held_out({"small": 0.001, "large": 0.004}, ["small", "large"])
    assert (ev.weak, ev.strong, ev.no_tradeoff) == ("small", "large", None)
    assert math.isfinite(ev.apgr) and math.isfinite(ev.cpt50)
    lines = eval_lines(ev, router)
    assert any(line.startswith(f"APGR {ev.apgr:.3f}: share of the small -> large") for line in lines)
    assert figures_json(ev)["apgr"] == ev.apgr and figures_json(ev)["no_tradeoff"] is None


def test_equal_accuracies_have_no_gap_to_recover() -> None:
    single = {"small": (0.8, 1.0), "large": (0.8, 5.0)}
    assert no_tradeoff(single, "large", "small") == (
        "the cheapest model (small) is as accurate as the most accurate (large, 0.800): "
        "route everything to small"
    )
    assert no_tradeoff({"small": (0.5, 1.0), "large": (0.8, 5.0)}, "large", "small") is None

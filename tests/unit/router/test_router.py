"""The router's pure core: learning topic content, the rule, errors, JSON without pickle, TF-IDF = sklearn."""

from __future__ import annotations

import builtins
import pickle
import sys

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from herd.policy.data import CalibrationData, ModelArrays
from herd.policy.router import (
    Router,
    RouterError,
    evaluate,
    fit_tfidf,
    route_rule,
    train_held_out,
    train_router,
)
from herd.policy.router.synthetic import topic_data

CLEAN = {
    "small": {"finance": 1.0, "sports": 0.0, "science": 0.0, "cooking": 1.0},
    "medium": {"finance": 0.0, "sports": 1.0, "science": 0.0, "cooking": 0.0},
    "large": {"finance": 0.0, "sports": 0.0, "science": 1.0, "cooking": 0.0},
}


def test_topic_router_reaches_the_oracle_on_held_out_prompts() -> None:
    texts, data = topic_data(1500, seed=3, skill=CLEAN)
    router, _, held = train_held_out(texts, data, seed=1)
    ev = evaluate(router, [texts[i] for i in held], data.take(held))
    assert ev.oracle[0] == 1.0
    best_single = max(q for q, _ in ev.single.values())
    assert best_single < 0.6
    assert ev.router[0] >= ev.oracle[0] - 0.03
    assert ev.herd.share >= 0.95
    assert ev.strong == ev.weak == "small" and np.isnan(ev.apgr)  # no gap between weak and strong


def test_noisy_topics_beat_every_single_model_by_far() -> None:
    texts, data = topic_data(3000, seed=0)
    router, _, held = train_held_out(texts, data)
    ev = evaluate(router, [texts[i] for i in held], data.take(held))
    ceiling = np.mean([0.92, 0.92, 0.92, 0.90])  # per topic the best model's skill
    assert ev.router[0] > max(q for q, _ in ev.single.values()) + 0.15
    assert ev.router[0] >= ceiling - 0.05


def test_rule_picks_the_cheapest_model_over_tau_else_the_most_likely() -> None:
    p = np.array([[0.9, 0.95, 0.99], [0.2, 0.7, 0.6], [0.1, 0.3, 0.4], [0.5, 0.5, 0.5]])
    cost = np.array([1.0, 5.0, 25.0])
    assert route_rule(p, cost, 0.5).tolist() == [0, 1, 2, 0]
    assert route_rule(p, cost, 0.0).tolist() == [0, 0, 0, 0]
    assert route_rule(p, cost, 1.0).tolist() == [2, 1, 2, 0]
    assert route_rule(p, cost[::-1].copy(), 0.55).tolist() == [2, 2, 2, 0]


def _data(scores: dict[str, list[float]]) -> CalibrationData:
    n = len(next(iter(scores.values())))
    plain = {
        m: ModelArrays(np.asarray(s), np.full(n, 1e-6), np.ones(n, dtype=bool)) for m, s in scores.items()
    }
    return CalibrationData("t", np.arange(n, dtype=np.int64), plain)


def test_one_class_names_the_model_and_the_class() -> None:
    data = _data({"a": [1.0, 0.0, 1.0, 0.0], "b": [1.0, 1.0, 1.0, 1.0]})
    with pytest.raises(RouterError, match=r"^model 'b': all 4 train answers are good \(score >= 0.5\)"):
        train_router(["x y", "y z", "z w", "w x"], data)
    errored = CalibrationData(
        "t",
        np.arange(2, dtype=np.int64),
        {"a": ModelArrays(np.array([np.nan, np.nan]), np.zeros(2), np.zeros(2, dtype=bool))},
    )
    # Errors are no answers, neither good nor bad: nothing is left to train on.
    with pytest.raises(RouterError, match="no prompts to train the router on \\(2 left out: a routed model"):
        train_router(["x y", "y z"], errored)


def test_unknown_model_no_prompts_and_misaligned_texts() -> None:
    data = _data({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    with pytest.raises(
        RouterError, match=r"unknown model\(s\) \['c'\]: the calibration data has \['a', 'b'\]"
    ):
        train_router(["x y", "y z"], data, models=["a", "c"])
    with pytest.raises(RouterError, match="^no prompts to train the router on$"):
        train_router(["x y", "y z"], data, rows=np.array([], dtype=int))
    with pytest.raises(RouterError, match="1 prompt texts for 2 calibration rows"):
        train_router(["x y"], data)
    with pytest.raises(RouterError, match="no TF-IDF terms"):
        train_router(["!", "?"], data)


def test_json_round_trip_predicts_identically_and_detects_tampering() -> None:
    texts, data = topic_data(600, seed=2)
    router = train_router(texts, data, tau=0.6)
    loaded = Router.from_json(router.to_json())
    probe = texts[:200] + ["", "an unseen finance stock question", "ÉLAN vital!"]
    assert np.array_equal(loaded.p_good(probe), router.p_good(probe))
    assert np.array_equal(loaded.route(probe), router.route(probe))
    assert loaded.version == router.version and loaded.tau == 0.6 and loaded.models == router.models
    assert loaded.to_json() == router.to_json()
    tampered = router.to_json().replace('"tau":0.6', '"tau":0.1')
    with pytest.raises(RouterError, match="does not match its parameters"):
        Router.from_json(tampered)
    with pytest.raises(RouterError, match="not a router"):
        Router.from_json('{"format": "other"}')


def test_loading_and_routing_never_touch_pickle_or_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    texts, data = topic_data(300, seed=4)
    text = train_router(texts, data).to_json()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    real_import = builtins.__import__

    def no_sklearn(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith(("sklearn", "joblib", "skops")):
            raise AssertionError(f"import of {name} while loading a router")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    router = Router.from_json(text)
    assert router.route(texts[:50]).shape == (50,)
    assert "herd.policy.router.model" in sys.modules


@pytest.mark.parametrize("analyzer,ngrams", [("word", (1, 2)), ("word", (1, 3)), ("char_wb", (2, 4))])
def test_tfidf_transform_equals_sklearn(analyzer: str, ngrams: tuple[int, int]) -> None:
    texts, _ = topic_data(300, seed=5)
    extra = ["", "a", "Ünïcode wörds, and PUNCT!!", "x " * 40]
    ours = fit_tfidf(texts, analyzer, ngrams)
    ref = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, max_features=50_000)
    ref.fit(texts)
    assert list(ours.terms) == ref.get_feature_names_out().tolist()
    np.testing.assert_allclose(
        ours.transform(texts + extra).toarray(), ref.transform(texts + extra).toarray(), atol=1e-12
    )

"""The offline encoder: loads and encodes with every socket refused; skipped without the extra."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from herd.policy.router import Router, evaluate, train_held_out
from herd.policy.router.encoder import MiniLMEncoder, available
from herd.policy.router.synthetic import topic_data

pytestmark = pytest.mark.skipif(not available(), reason="router-embed extra not installed")


def test_encoder_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    vectors = MiniLMEncoder().encode(
        ["What is the capital of France?", "Paris is France's capital.", "I love jazz"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.7 > sims[0, 2]


def test_encoder_router_round_trips_and_learns_topics() -> None:
    texts, data = topic_data(800, seed=9)
    router, _, held = train_held_out(texts, data, features="minilm")
    loaded = Router.from_json(router.to_json())
    assert loaded.encoder == router.encoder and loaded.features is None
    held_texts = [texts[i] for i in held]
    assert np.array_equal(loaded.p_good(held_texts), router.p_good(held_texts))
    ev = evaluate(loaded, held_texts, data.take(held))
    assert ev.router[0] > max(q for q, _ in ev.single.values()) + 0.15

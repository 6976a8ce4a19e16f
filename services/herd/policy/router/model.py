"""The router: per model a linear classifier for P(good | prompt), and the routing rule.

A `Router` is plain parameters (features, per-model weights and intercepts, model order, mean costs,
τ), written as JSON by `to_json` and read back by `Router.from_json` with `json` and numpy only:
nothing is ever unpickled, so a router may come from a database or a shared path. Its `version` is
the sha256 of its canonical JSON (sorted keys, floats as Python writes them, which round-trip
exactly), so a loaded router predicts bit-for-bit what the saved one did.

Routing rule: the cheapest model (by mean attributed cost per prompt on the calibration
data) whose predicted P(good) >= τ; when none reaches τ, the model with the highest predicted P(good).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from herd.errors import UserError
from herd.policy.router.encoder import NAME, MiniLMEncoder
from herd.policy.router.tfidf import Tfidf

FORMAT = "herd-router/1"


class RouterError(UserError, ValueError):
    """A router cannot be trained, read or applied; the message names the model, field or problem."""


def route_rule(p_good: np.ndarray, cost_usd: np.ndarray, tau: float) -> np.ndarray:
    """Model index per prompt: cheapest with P(good) >= `tau`, else the argmax of P(good).

    `p_good` (n, k) in [0, 1]; `cost_usd` (k,) mean cost per prompt (ties: the earlier model);
    returns (n,) int64 column indices. Vectorised, O(n·k).
    """
    order = np.argsort(cost_usd, kind="stable")
    ok = p_good[:, order] >= tau
    cheapest = order[np.argmax(ok, axis=1)]
    return np.asarray(np.where(ok.any(axis=1), cheapest, np.argmax(p_good, axis=1)), dtype=np.int64)


@dataclass(frozen=True)
class Router:
    """Trained router. `models` (k,) names in column order; `cost_usd` (k,) mean USD per prompt;
    `coef` (k, d) and `intercept` (k,) of the logistic models, P(good) = sigmoid(x·coef[m] + b[m]);
    `features`: a Tfidf, or None with `encoder` naming the sentence encoder (see herd.policy.router.
    encoder); `tau` the routing threshold; `cut` the score at or above which an answer is good."""

    task: str
    models: tuple[str, ...]
    cost_usd: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    tau: float = 0.5
    cut: float = 0.5
    features: Tfidf | None = None
    encoder: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.models)
        if k == 0:
            raise RouterError("a router needs at least one model")
        if len(set(self.models)) != k:
            raise RouterError(f"router models {list(self.models)} name a model twice")
        if self.cost_usd.shape != (k,) or self.intercept.shape != (k,) or self.coef.ndim != 2:
            raise RouterError(f"router arrays do not match its {k} model(s)")
        if (self.features is None) == (self.encoder is None):
            raise RouterError("a router has either TF-IDF features or an encoder name, not both or neither")
        dim = self.features.dim if self.features is not None else self.coef.shape[1]
        if self.coef.shape != (k, dim):
            raise RouterError(f"coef has shape {self.coef.shape}, expected ({k}, {dim})")
        if not 0.0 <= self.tau <= 1.0:
            raise RouterError(f"tau must lie in [0, 1], got {self.tau}")

    def featurize(self, texts: Sequence[str], encoder: Any = None) -> Any:
        """(n, d) features: sparse TF-IDF rows, or encoder vectors (`encoder`: an object with
        `.name` and `.encode(texts)`; default the named built-in one, loaded once per call site)."""
        if self.features is not None:
            return self.features.transform(texts)
        enc = encoder if encoder is not None else _encoder(str(self.encoder))
        if enc.name != self.encoder:
            raise RouterError(f"router was trained on encoder {self.encoder!r}, got {enc.name!r}")
        return enc.encode(texts)

    def p_good_from_features(self, x: Any) -> np.ndarray:
        """(n, k) predicted P(good) from features `x` (n, d)."""
        z = np.asarray(x @ self.coef.T) + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def p_good(self, texts: Sequence[str], encoder: Any = None) -> np.ndarray:
        """(n, k) predicted P(model's answer is good | prompt), columns in `models` order."""
        if len(texts) == 0:
            return np.zeros((0, len(self.models)))
        return self.p_good_from_features(self.featurize(texts, encoder))

    def route(self, texts: Sequence[str], tau: float | None = None, encoder: Any = None) -> np.ndarray:
        """(n,) int64 model index per prompt under the routing rule (τ = `tau` or the router's)."""
        return route_rule(self.p_good(texts, encoder), self.cost_usd, self.tau if tau is None else tau)

    def route_names(self, texts: Sequence[str], tau: float | None = None) -> list[str]:
        """The entry model's name per prompt."""
        return [self.models[i] for i in self.route(texts, tau)]

    def with_tau(self, tau: float) -> Router:
        return replace(self, tau=float(tau))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.task,
            "models": list(self.models),
            "cost_usd": self.cost_usd.tolist(),
            "tau": float(self.tau),
            "cut": float(self.cut),
            "features": (
                self.features.to_dict() if self.features else {"kind": "encoder", "name": self.encoder}
            ),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "info": self.info,
        }

    @property
    def version(self) -> str:
        """sha256 (hex) of the canonical JSON of the router's parameters."""
        return hashlib.sha256(_canonical(self.to_dict()).encode()).hexdigest()

    def to_json(self) -> str:
        """Canonical JSON text with the `version` hash included; `Router.from_json` reads it back."""
        doc = self.to_dict()
        doc["version"] = self.version
        return _canonical(doc)

    @classmethod
    def from_json(cls, text: str | bytes) -> Router:
        """Parse `to_json` output with json + numpy only. Raises RouterError on a malformed text, an
        unknown format, or a version hash that does not match the parameters (altered text)."""
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise RouterError(f"not a router (expected format {FORMAT!r})")
            feats = doc["features"]
            router = cls(
                str(doc["task"]),
                tuple(str(m) for m in doc["models"]),
                np.asarray(doc["cost_usd"], dtype=float),
                np.asarray(doc["coef"], dtype=float),
                np.asarray(doc["intercept"], dtype=float),
                float(doc["tau"]),
                float(doc["cut"]),
                Tfidf.from_dict(feats) if feats["kind"] == "tfidf" else None,
                str(feats["name"]) if feats["kind"] == "encoder" else None,
                dict(doc.get("info", {})),
            )
        except RouterError:
            raise
        # RecursionError: a text nested deeper than the stack (json's parser recurses per level).
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise RouterError(f"router JSON is malformed: {exc!r}") from None
        if "version" in doc and doc["version"] != router.version:
            raise RouterError(f"router version {doc['version']} does not match its parameters (altered?)")
        return router


def _canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)


_ENCODERS: dict[str, Any] = {}


def _encoder(name: str) -> Any:
    if name != NAME:
        raise RouterError(f"unknown encoder {name!r} (known: {NAME})")
    if name not in _ENCODERS:
        _ENCODERS[name] = MiniLMEncoder()
    return _ENCODERS[name]

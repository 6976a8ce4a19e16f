"""Choose the router's τ for a target, on the train split, from out-of-fold predictions.

A router's own train prompts flatter it (the logistic models have seen their labels), so τ is chosen on
out-of-fold P(good): the train rows are cut into `folds` seeded folds, a router is trained on the
others and predicts each fold (cross-validation; the held-out split is never touched). The targets are
`herd calibrate`'s (herd.policy.calibrate): MinQuality → the cheapest τ with train accuracy >= q;
MaxCostPer1k → the most accurate τ costing <= USD per 1k prompts; Match(model, at) → the cheapest τ
reaching `at` × the model's accuracy alone on the train rows. Accuracy and cost are the router's
(prompt ends at its routed model: herd.policy.router.evaluate.outcome).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from herd.policy.calibrate import Match, MaxCostPer1k, MinQuality, Target, UnreachableTargetError
from herd.policy.data import CalibrationData
from herd.policy.router.evaluate import outcome
from herd.policy.router.model import RouterError, route_rule
from herd.policy.router.train import train_router

TAUS = np.linspace(0.0, 1.0, 101)


class CachedEncoder:
    """Wraps a sentence encoder (`.name`, `.encode(texts)`) so cross-validation encodes each text once."""

    def __init__(self, encoder: Any) -> None:
        self.inner = encoder
        self.name = encoder.name
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            for t, v in zip(todo, self.inner.encode(todo), strict=True):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts])


def out_of_fold(
    texts: Sequence[str],
    data: CalibrationData,
    rows: np.ndarray,
    models: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    **train_kwargs: Any,
) -> np.ndarray | None:
    """(len(rows), k) P(good) for each train row from a router that did not see it; None when a fold's
    training set lacks a class for some model (too few prompts to cross-validate)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(rows)) % folds
    out = np.zeros((len(rows), len(models)))
    for f in range(folds):
        inside = fold == f
        try:
            r = train_router(texts, data, models=models, rows=rows[~inside], **train_kwargs)
        except RouterError:
            return None
        out[inside] = r.p_good([texts[int(i)] for i in rows[inside]])
    return out


@dataclass(frozen=True)
class TauChoice:
    """τ and its train figures: `accuracy`, `cost_per_1k` (USD); `reference`: Match's model alone."""

    tau: float
    accuracy: float
    cost_per_1k: float
    reference: float | None = None


def choose_tau(
    train: CalibrationData,
    models: Sequence[str],
    p_good: np.ndarray,
    cost_usd: np.ndarray,
    cut: float,
    target: Target,
    taus: np.ndarray = TAUS,
) -> TauChoice:
    """Pick τ per `target` on the train rows (`p_good` (n, k) for `train`'s rows). Ties: the higher
    accuracy / lower cost, then the larger τ (routes more prompts to better models).

    Raises UnreachableTargetError naming the closest τ; RouterError for a Match model not routed."""
    points = np.array([outcome(train, models, route_rule(p_good, cost_usd, float(t)), cut) for t in taus])
    acc, cost = points[:, 0], points[:, 1]
    reference = None
    eps = 1e-12
    if isinstance(target, MaxCostPer1k):
        feasible = cost <= target.usd * (1 + eps) + eps
        order = np.lexsort((-taus, cost, -acc))
    else:
        if isinstance(target, Match):
            if target.model not in models:
                raise RouterError(f"--match model {target.model!r} is not routed to; routed: {list(models)}")
            j = list(models).index(target.model)
            reference = outcome(train, models, np.full(train.n, j), cut)[0]
            floor = target.at * reference
        else:
            floor = target.quality
        feasible = acc >= floor - eps
        order = np.lexsort((-taus, -acc, cost))
    chosen = order[feasible[order]]
    if chosen.size:
        i = int(chosen[0])
        return TauChoice(float(taus[i]), float(acc[i]), float(cost[i]), reference)
    if isinstance(target, MaxCostPer1k):
        i = int(np.argmin(cost))
        raise UnreachableTargetError(
            f"no router threshold costs at most ${target.usd:.6g} per 1k prompts on the {train.n} train "
            f"prompts; the cheapest is tau {taus[i]:.2f} at ${cost[i]:.6g} per 1k"
        )
    i = int(np.lexsort((cost, -acc))[0])
    wanted = (
        f"accuracy {target.quality:.4g}"
        if isinstance(target, MinQuality)
        else (f"{target.at:.0%} of {target.model} alone ({float(reference or 0):.4g})")
    )
    raise UnreachableTargetError(
        f"no router threshold reaches {wanted} on the {train.n} train prompts; the best is tau "
        f"{taus[i]:.2f} at {acc[i]:.4g}"
    )

"""Synthetic calibration data for tests, benchmarks and examples: no model, no database.

Each prompt has a difficulty z ~ N(0, 1); model m answers correctly with probability
sigmoid(skill_m - z) and its measures carry a noisy signal of that correctness: the margin is
sigmoid(noise + signal·(±1)) (high when right), entropies and NLL grow when wrong. A small share
of attempts error or lack a measure, as in the ledger. Costs are lognormal around `usd[m]`.

For checking a guarantee, `draw` takes i.i.d. calibration samples from a large synthetic
*population*: any policy's quality on the population (its replay there) is then the exact truth the
guarantee speaks of, since a new prompt is a uniform draw from the same population.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from herd.policy.data import CalibrationData, ModelArrays


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _model(
    rng: np.random.Generator,
    z: np.ndarray,
    skill: float,
    usd: float,
    signal: float,
    error_rate: float,
    missing_rate: float,
) -> ModelArrays:
    n = len(z)
    correct = rng.random(n) < _sigmoid(skill - z)
    sign = np.where(correct, 1.0, -1.0)
    margin = _sigmoid(rng.normal(0.5, 1.0, n) + signal * sign)
    mean_entropy = np.exp(rng.normal(-1.0, 0.6, n) - 0.5 * signal * sign)
    max_entropy = mean_entropy * np.exp(np.abs(rng.normal(0.3, 0.3, n)))
    mean_nll = np.exp(rng.normal(-1.5, 0.7, n) - 0.5 * signal * sign)
    ok = rng.random(n) >= error_rate
    score = np.where(ok, correct.astype(float), np.nan)
    measures = {
        "first_token_margin": margin,
        "mean_entropy": mean_entropy,
        "max_entropy": max_entropy,
        "mean_nll": mean_nll,
    }
    for values in measures.values():
        values[(rng.random(n) < missing_rate) | ~ok] = np.nan
    cost = usd * np.exp(rng.normal(0.0, 0.3, n))
    return ModelArrays(score, cost, ok, measures)


def synthetic(
    n: int = 10_000,
    models: Sequence[str] = ("small", "medium", "large"),
    skills: Sequence[float] = (0.0, 1.0, 2.0),
    usd: Sequence[float] = (1e-6, 5e-6, 2.5e-5),
    signal: float = 1.0,
    refined: bool = False,
    error_rate: float = 0.005,
    missing_rate: float = 0.005,
    seed: int = 0,
    task: str = "synthetic",
) -> CalibrationData:
    """n prompts × len(models) models. With `refined`, each model also has a refinement-on variant
    (skill + 0.3, three times the cost). USD per attempt ~ `usd[m]`; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.0, n)
    plain = {
        m: _model(rng, z, s, u, signal, error_rate, missing_rate)
        for m, s, u in zip(models, skills, usd, strict=True)
    }
    refine = (
        {
            m: _model(rng, z, s + 0.3, 3 * u, signal, error_rate, missing_rate)
            for m, s, u in zip(models, skills, usd, strict=True)
        }
        if refined
        else {}
    )
    return CalibrationData(task, np.arange(n, dtype=np.int64), plain, refine)


def draw(population: CalibrationData, n: int, seed: int) -> CalibrationData:
    """n prompts drawn independently and uniformly, with replacement, from `population` (seeded):
    an i.i.d. calibration sample whose truth is known (replay any policy on `population`)."""
    rows = np.random.default_rng(seed).integers(0, population.n, n)
    return population.take(rows)

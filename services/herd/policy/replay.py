"""Replay any policy on calibration data, with no model call, and bootstrap its figures.

`replay` follows each prompt down the policy's tiers exactly as the live pipeline would
(services/pipeline.py): the tier's deciding attempt either ends the prompt (kept answer) or, when
its measure crosses the threshold and a next tier exists, escalates; an errored attempt fails the
prompt (score 0, a failure, never escalated); a missing measure never escalates. Cost is the sum of
the attributed cost of every model the prompt reached (the failed one included).

Threshold sweeps and the Pareto front live in herd.policy.sweep and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from herd.policy.data import CalibrationData, CalibrationDataError, ModelArrays
from herd.policy.spec import Policy, Tier
from herd.policy.sweep import SweepResult, pareto_front, sweep

__all__ = [
    "CalibrationData",
    "Interval",
    "ReplayBootstrap",
    "ReplayResult",
    "SweepResult",
    "bootstrap",
    "bootstrap_means",
    "pareto_front",
    "replay",
    "sweep",
]


@dataclass(frozen=True)
class ReplayResult:
    """Per prompt outcome of one policy. Arrays have shape (n,) unless noted.

    - `final_tier`: index into `policy.tiers` of the tier whose attempt ended the prompt;
    - `failed`: the ending attempt was an error (score 0);
    - `escalations`: how many times the prompt escalated (= final_tier);
    - `score`: the prompt's final score (0/1 when replayed with a scorer cut), 0 when failed;
    - `cost_usd`: attributed cost of all the prompt's attempts, USD;
    - `reached`: (n_tiers, n) bool, the prompt reached tier i; `escalated`: (n_tiers, n) bool.
    """

    policy: Policy
    prompt_ids: np.ndarray
    final_tier: np.ndarray
    failed: np.ndarray
    escalations: np.ndarray
    score: np.ndarray
    cost_usd: np.ndarray
    reached: np.ndarray
    escalated: np.ndarray

    @property
    def quality(self) -> float:
        """Mean final score over all prompts (failures count 0)."""
        return float(self.score.mean())

    @property
    def cost_per_1k(self) -> float:
        """Mean attributed cost per prompt times 1000, USD per 1k prompts."""
        return float(self.cost_usd.mean() * 1000.0)

    @property
    def escalation_rate(self) -> list[float]:
        """Per tier: share of the prompts reaching it that escalated from it (NaN if none reached it)."""
        reached = self.reached.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return [float(v) for v in self.escalated.sum(axis=1) / reached]

    @property
    def failure_rate(self) -> float:
        return float(self.failed.mean())

    @property
    def sources(self) -> list[str]:
        """Label of each tier's deciding attempt: `model/answer` or `model/refine`."""
        return [f"{t.model}/{'refine' if t.refine else 'answer'}" for t in self.policy.tiers]

    def source(self, i: int) -> str:
        """Which attempt gave prompt row `i` its answer, e.g. `gemma3/answer` (or `.../error`)."""
        label = self.sources[int(self.final_tier[i])]
        return label.rsplit("/", 1)[0] + "/error" if self.failed[i] else label


def tier_values(data: CalibrationData, policy: Policy, tier: Tier) -> np.ndarray:
    """(n,) float: the tier's measure on its model's deciding attempt. `p_correct` comes from the
    policy's calibration map for the model when it has one, else from a `p_correct` data array."""
    arrays = data.arrays(tier.model, tier.refine)
    if tier.measure is None:
        return np.full(data.n, np.nan)
    if tier.measure == "p_correct" and tier.model in policy.calibration:
        cal = policy.calibration[tier.model]
        return cal.apply(_measure(arrays, cal.measure, tier.model))
    return _measure(arrays, tier.measure, tier.model)


def _measure(arrays: ModelArrays, name: str, model: str) -> np.ndarray:
    if name not in arrays.measures:
        raise CalibrationDataError(f"no {name!r} values for model {model!r} in the calibration data")
    return arrays.measures[name]


def replay(data: CalibrationData, policy: Policy, scorer_cut: float | None = None) -> ReplayResult:
    """Evaluate `policy` on every prompt of `data`, vectorised over prompts (O(n × tiers)).

    `scorer_cut`: when set, a prompt's score is 1 if its score >= cut else 0 (accuracy), else the raw
    score in [0, 1]. Raises CalibrationDataError when a tier's model, variant or measure is missing.
    """
    n, k = data.n, len(policy.tiers)
    alive = np.ones(n, dtype=bool)
    final_tier = np.zeros(n, dtype=np.int64)
    failed = np.zeros(n, dtype=bool)
    score = np.zeros(n)
    cost = np.zeros(n)
    reached = np.zeros((k, n), dtype=bool)
    escalated = np.zeros((k, n), dtype=bool)
    for i, tier in enumerate(policy.tiers):
        arrays = data.arrays(tier.model, tier.refine)
        reached[i] = alive
        cost += np.where(alive, arrays.cost_usd, 0.0)
        esc = alive & arrays.ok & tier.escalates(tier_values(data, policy, tier))
        stop = alive & ~esc
        score[stop] = arrays.effective_score(scorer_cut)[stop]
        failed[stop] = ~arrays.ok[stop]
        final_tier[stop] = i
        escalated[i] = esc
        alive = esc
    return ReplayResult(
        policy, data.prompt_ids, final_tier, failed, final_tier.copy(), score, cost, reached, escalated
    )


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval [low, high]."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class ReplayBootstrap:
    quality: Interval
    cost_per_1k: Interval
    escalation_rate: list[Interval]


def bootstrap_means(
    columns: np.ndarray, n_resamples: int = 1000, seed: int = 0, chunk: int = 200
) -> np.ndarray:
    """Column sums of `columns` (n, k) under `n_resamples` resamples of the n rows with replacement.

    Returns (n_resamples, k) weighted sums, divided by n (so ratios of two columns are ratios of
    means). Vectorised: each resample is a count vector w (n,) (how often each row was drawn), and
    the sums are w @ columns; `chunk` resamples at a time bound the memory to chunk × n counts.
    Fixed `seed`: reproducible.
    """
    n = columns.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, columns.shape[1]))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(float)
        out[start : start + size] = counts @ columns / n
    return out


def bootstrap(
    result: ReplayResult, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> ReplayBootstrap:
    """Percentile-bootstrap intervals (Efron 1979; Efron & Tibshirani 1993, ch. 13) for quality, cost
    per 1k prompts and each tier's escalation rate: resample prompts with replacement `n_resamples`
    times, take the (1-level)/2 and (1+level)/2 quantiles of the resampled statistic.

    Escalation rates are ratios (escalated / reached) recomputed in each resample; a resample in
    which no prompt reaches a tier is left out of that tier's interval (NaN if all are).
    """
    k = len(result.policy.tiers)
    columns = np.column_stack(
        [
            result.score,
            result.cost_usd * 1000.0,
            *result.reached.astype(float),
            *result.escalated.astype(float),
        ]
    )
    sums = bootstrap_means(columns, n_resamples, seed)
    lo_q, hi_q = (1.0 - level) / 2.0, (1.0 + level) / 2.0

    def interval(value: float, samples: np.ndarray) -> Interval:
        samples = samples[~np.isnan(samples)]
        if samples.size == 0:
            return Interval(value, float("nan"), float("nan"))
        low, high = np.quantile(samples, [lo_q, hi_q])
        return Interval(value, float(low), float(high))

    with np.errstate(invalid="ignore", divide="ignore"):
        rates = sums[:, 2 + k :] / sums[:, 2 : 2 + k]
    return ReplayBootstrap(
        quality=interval(result.quality, sums[:, 0]),
        cost_per_1k=interval(result.cost_per_1k, sums[:, 1]),
        escalation_rate=[interval(v, rates[:, i]) for i, v in enumerate(result.escalation_rate)],
    )

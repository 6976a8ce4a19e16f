"""A policy chosen with a finite-sample guarantee: Learn then Test along the cost order.

The method is Learn then Test (LTT; Angelopoulos, Bates, Candès, Jordan & Lei 2021, arXiv
2110.01052) with the calibration prompts split in two, as Pareto Testing does (Laufer-Goldshtein,
Fisch, Barzilay & Jaakkola 2023, arXiv 2210.07913):

1. on the *order* part, the caller searches the policies and orders the candidates from the safest
   (most expensive) to the cheapest; nothing of the *test* part is looked at;
2. on the *test* part, each candidate k has the null hypothesis H_k: "its quality misses the target"
   and a valid p-value p_k; fixed-sequence testing rejects H_1, H_2, ... in that order at level
   δ = 1 − confidence and stops at the first p_k > δ. The chosen candidate is the last rejected.

Fixed-sequence testing controls the family-wise error rate at δ without a multiplicity correction,
because the order is fixed before the test prompts are seen: the first true null in the order is
rejected with probability ≤ δ, and nothing after it is reached then. Ordering by cost measured on
the same prompts would make the order depend on the test data, which is why the order comes from
its own part.

The claim (`certify`): if the calibration prompts are independent draws from the distribution the
policy will run on (i.i.d.; a seeded random sample of the same document stream), then with
probability ≥ confidence over the draw of the calibration prompts, every rejected candidate, so the
chosen one, has expected quality on a new prompt ≥ the target, where the target is
- `Floor(quality=q)`: mean score ≥ q (accuracy when scores are 0/1);
- `Floor(reference=s_ref, at=a)`: mean score ≥ a × the reference model's mean score alone, both
  on the same prompts (a paired comparison).

The p-values, per candidate, on a per-prompt loss L in [0, 1] whose mean is at most `level`
exactly when the target holds:
- quality target: L = 1 − score, level = 1 − q. With 0/1 scores the exact binomial tail
  P(Binomial(n, level) ≤ k) (Clopper–Pearson; scipy.stats), else the betting test below;
- Match target: L = (a·s_ref − s + 1) / (1 + a) on each prompt (the paired difference, shifted into
  [0, 1]; its mean ≤ 1/(1 + a) ⇔ E[s] ≥ a·E[s_ref]), level = 1/(1 + a), with the betting test.
  Prompts both answer alike add little variance, so the test is as sharp as the few prompts on which
  the two differ allow (a McNemar-like behaviour for 0/1 scores) while staying valid for any score.
- the betting test (Waudby-Smith & Ramdas 2023, "Estimating means of bounded random variables by
  betting", JRSS-B 86(1); the "WSR" bound of Bates, Angelopoulos, Lei, Malik & Jordan 2021, RCPS,
  arXiv 2101.02703): wealth K_t = Π_{i≤t} (1 + λ_i (level − L_i)) with the predictable plug-in
  bet λ_i = min(sqrt(2 log(1/δ) / (n σ̂²_{i−1})), c / (1 − level)), c = 3/4; under H_k the wealth is
  a nonnegative supermartingale, so p = 1 / max_t K_t is valid by Ville's inequality. The prompts
  are visited in a seeded random order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from herd.errors import UserError

# The betting test's cap on a bet, as a share of the most it could bet without going broke
# (Waudby-Smith & Ramdas 2023 use 1/2 or 3/4): higher wins faster on clean data, loses more on a miss.
BET_CAP = 0.75
# Power calculations: resamples per size, and the largest test sample considered.
POWER_RESAMPLES = 64
MAX_TEST_PROMPTS = 100_000


class GuaranteeError(UserError, ValueError):
    """The arguments of a test are out of range (a confidence outside (0, 1), a bad target)."""


@dataclass(frozen=True)
class Floor:
    """What "quality ≥ target" means: `quality` (a mean score), or `at` × the mean of `reference`,
    the reference model's per-prompt scores (n,) on the same test prompts."""

    quality: float | None = None
    reference: np.ndarray | None = None
    at: float = 1.0

    def __post_init__(self) -> None:
        if (self.quality is None) == (self.reference is None):
            raise GuaranteeError("a floor is either a quality or a reference model's scores, not both")
        if self.quality is not None and not 0.0 <= self.quality <= 1.0:
            raise GuaranteeError(f"a quality target must lie in [0, 1], got {self.quality}")
        if self.reference is not None and not 0.0 < self.at:
            raise GuaranteeError(f"--at must be positive, got {self.at}")

    @property
    def value(self) -> float:
        """The quality the target asks for on these prompts: q, or at × the reference's mean."""
        if self.quality is not None:
            return self.quality
        return self.at * float(np.mean(np.asarray(self.reference, dtype=float)))


@dataclass(frozen=True)
class Risk:
    """Per-prompt losses (K, n) in [0, 1] of K candidates; the target holds iff E[loss] <= `level`.
    `binary`: every loss is 0 or 1 (the exact binomial test applies)."""

    losses: np.ndarray
    level: float
    binary: bool

    @property
    def test(self) -> str:
        return "exact binomial (Clopper-Pearson)" if self.binary else "betting (Waudby-Smith & Ramdas)"


def risk(scores: np.ndarray, floor: Floor) -> Risk:
    """The losses of candidates with per-prompt `scores` (K, n) in [0, 1] against `floor` (see the
    module docstring). Raises GuaranteeError for scores outside [0, 1] or a misaligned reference."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.size and (np.isnan(scores).any() or scores.min() < 0.0 or scores.max() > 1.0):
        raise GuaranteeError("per-prompt scores must lie in [0, 1]")
    if floor.quality is not None:
        losses = 1.0 - scores
        return Risk(losses, 1.0 - floor.quality, bool(np.isin(losses, (0.0, 1.0)).all()))
    reference = np.asarray(floor.reference, dtype=float)
    if reference.shape != scores.shape[1:]:
        raise GuaranteeError(f"reference scores of shape {reference.shape} for {scores.shape[1]} prompts")
    a = floor.at
    return Risk((a * reference - scores + 1.0) / (1.0 + a), 1.0 / (1.0 + a), False)


def _log_wealth(losses: np.ndarray, level: float, delta: float) -> np.ndarray:
    """max over t of log K_t (the betting test's wealth), per row of `losses` (..., n)."""
    n = losses.shape[-1]
    if n == 0:
        return np.zeros(losses.shape[:-1])
    t = np.arange(1, n + 1)
    mean = (0.5 + np.cumsum(losses, axis=-1)) / (t + 1)
    var = (0.25 + np.cumsum((losses - mean) ** 2, axis=-1)) / (t + 1)
    previous = np.concatenate([np.full(losses.shape[:-1] + (1,), 0.25), var[..., :-1]], axis=-1)
    cap = BET_CAP / (1.0 - level) if level < 1.0 else np.inf
    bet = np.minimum(np.sqrt(2.0 * math.log(1.0 / delta) / (n * previous)), cap)
    log_k = np.cumsum(np.log1p(bet * (level - losses)), axis=-1)
    return np.asarray(np.maximum(log_k.max(axis=-1), 0.0))


def _order(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def p_values(r: Risk, confidence: float, seed: int = 0) -> np.ndarray:
    """(K,) valid p-values of H_k: E[loss_k] > level (the target is missed). Binary losses: the
    exact binomial tail P(Binomial(n, level) <= k_wrong); else 1 / max_t K_t of the betting test
    tuned for δ = 1 − confidence, the prompts visited in a `seed`ed random order."""
    delta = _delta(confidence)
    losses = r.losses
    n = losses.shape[1]
    if n == 0:
        return np.ones(losses.shape[0])
    if r.binary:
        return np.asarray(stats.binom.cdf(np.rint(losses.sum(axis=1)), n, r.level), dtype=float)
    ordered = losses[:, _order(n, seed)]
    return np.asarray(np.minimum(1.0, np.exp(-_log_wealth(ordered, r.level, delta))))


def upper_bound(losses: np.ndarray, binary: bool, confidence: float, seed: int = 0) -> float:
    """Upper confidence bound at `confidence` on the mean of one candidate's `losses` (n,): the
    one-sided Clopper–Pearson bound (scipy.stats.beta) for 0/1 losses, else the largest level the
    betting test does not reject (bisection; the wealth grows with the level)."""
    delta = _delta(confidence)
    n = len(losses)
    if n == 0:
        return 1.0
    if binary:
        k = int(round(float(np.sum(losses))))
        return 1.0 if k >= n else float(stats.beta.ppf(confidence, k + 1, n - k))
    ordered = np.asarray(losses, dtype=float)[_order(n, seed)]
    low, high = 0.0, 1.0
    if _log_wealth(ordered, high - 1e-12, delta) < math.log(1.0 / delta):
        return 1.0
    for _ in range(50):
        mid = (low + high) / 2
        rejected = _log_wealth(ordered, mid, delta) >= math.log(1.0 / delta)
        low, high = (low, mid) if rejected else (mid, high)
    return high


def margin_bound(r: Risk, k: int, floor: Floor, confidence: float, seed: int = 0) -> float:
    """Lower confidence bound at `confidence` on candidate k's margin over the target: quality − q,
    or quality − at × the reference's quality. It is >= 0 (up to rounding) when k passes its test."""
    u = upper_bound(r.losses[k], r.binary, confidence, seed)
    if floor.quality is not None:
        return (1.0 - u) - floor.quality
    return 1.0 - u * (1.0 + floor.at)  # E[at·s_ref − s] ≤ u(1 + at) − 1


def fixed_sequence(p: np.ndarray, confidence: float) -> int:
    """How many hypotheses fixed-sequence testing rejects: the length of the leading run of p <= δ."""
    delta = _delta(confidence)
    failed = np.flatnonzero(np.asarray(p) > delta)
    return int(failed[0]) if failed.size else len(p)


@dataclass(frozen=True)
class Certificate:
    """The outcome of `certify` over K candidates ordered safest first.

    `rejected`: how many candidates, from the first, are certified (0: none); the chosen one is
    `rejected − 1`. `p_values` (K,): NaN past the first failure (never needed). `bound`: the chosen
    candidate's lower confidence bound on its margin over the target (None if none is certified).
    """

    rejected: int
    p_values: np.ndarray
    bound: float | None
    test: str
    n: int
    confidence: float

    @property
    def chosen(self) -> int | None:
        return self.rejected - 1 if self.rejected else None


def certify(scores: np.ndarray, floor: Floor, confidence: float, seed: int = 0, sure: int = 0) -> Certificate:
    """Fixed-sequence test of K candidates with per-prompt `scores` (K, n) on the test prompts,
    ordered from the safest (most expensive) to the cheapest. The first `sure` candidates meet the
    target by construction (e.g. the reference model alone against at <= 1 × itself) and are
    rejected without a test. Raises GuaranteeError for a confidence outside (0, 1) or bad scores.
    """
    r = risk(scores, floor)
    p = np.full(r.losses.shape[0], np.nan)
    p[:sure] = 0.0
    # Evaluate in chunks: the sequence usually stops long before the cheapest candidates.
    start, rejected = sure, sure
    while start < len(p) and rejected == start:
        stop = min(len(p), start + 16)
        p[start:stop] = p_values(Risk(r.losses[start:stop], r.level, r.binary), confidence, seed)
        rejected = start + fixed_sequence(p[start:stop], confidence)
        start = stop
    bound = None
    if rejected:
        bound = margin_bound(r, rejected - 1, floor, confidence, seed)
    return Certificate(rejected, p, bound, r.test, r.losses.shape[1], confidence)


def prompts_needed(
    scores: np.ndarray, floor: Floor, confidence: float, power: float = 0.8, seed: int = 0
) -> int | None:
    """About how many test prompts would let one candidate with per-prompt `scores` (n,) pass its
    test with probability >= `power`, if its per-prompt results (paired with the reference's) were
    drawn like these: the exact binomial power for 0/1 losses, else `POWER_RESAMPLES` bootstrap
    resamples of the prompts per size, over sizes growing by 1.5×. None when its observed mean
    misses the target (no number of prompts would do) or more than MAX_TEST_PROMPTS are needed."""
    r = risk(np.asarray(scores)[None, :], floor)
    losses = r.losses[0]
    if losses.size == 0 or losses.mean() >= r.level:
        return None
    delta = _delta(confidence)
    rng = np.random.default_rng(seed)
    # Start at half the normal approximation's answer: sizes far below it cannot have the power.
    gap, sd = r.level - float(losses.mean()), max(float(losses.std()), 1e-6)
    normal = ((stats.norm.ppf(1 - delta) + stats.norm.ppf(power)) * sd / gap) ** 2
    size = max(10, int(normal / 2))
    while size <= MAX_TEST_PROMPTS:
        if r.binary:
            # The most wrong answers that still pass, then the chance of at most that many.
            k = int(stats.binom.ppf(delta, size, r.level))
            while k >= 0 and stats.binom.cdf(k, size, r.level) > delta:
                k -= 1
            chance = float(stats.binom.cdf(k, size, losses.mean())) if k >= 0 else 0.0
        else:
            wins = 0
            for _ in range(0, POWER_RESAMPLES, 8):  # 8 resamples at a time bound the memory
                draws = losses[rng.integers(0, losses.size, size=(8, size))]
                wins += int((_log_wealth(draws, r.level, delta) >= math.log(1.0 / delta)).sum())
            chance = wins / (8 * math.ceil(POWER_RESAMPLES / 8))
        if chance >= power:
            return size
        size = int(math.ceil(size * 1.5))
    return None


def _delta(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise GuaranteeError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return 1.0 - confidence

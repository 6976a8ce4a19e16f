"""The guarantee of `herd calibrate` (herd.policy.guarantee): its tests are valid, its bounds agree
with its tests, and, over many seeded calibration samples from a synthetic herd whose truth is
known, the chosen policy meets the target at least as often as the stated confidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from herd.policy.calibrate import Match, MinQuality, Target, UnreachableTargetError, choose
from herd.policy.guarantee import (
    Floor,
    GuaranteeError,
    Risk,
    certify,
    fixed_sequence,
    margin_bound,
    p_values,
    prompts_needed,
    risk,
)
from herd.policy.replay import replay
from herd.policy.spec import Policy
from herd.policy.synthetic import draw, synthetic

from .conftest import arrays, dataset

CONFIDENCE = 0.9


def test_binary_quality_uses_the_exact_binomial_tail_and_clopper_pearson() -> None:
    n = 50
    for wrong in range(0, n + 1, 5):
        scores = np.array([0.0] * wrong + [1.0] * (n - wrong))
        r = risk(scores[None, :], Floor(quality=0.8))
        assert r.binary and r.level == pytest.approx(0.2)
        p = p_values(r, CONFIDENCE)[0]
        assert p == pytest.approx(stats.binom.cdf(wrong, n, 0.2))
        bound = margin_bound(r, 0, Floor(quality=0.8), CONFIDENCE)
        lower = stats.binomtest(n - wrong, n, alternative="greater").proportion_ci(CONFIDENCE).low
        assert bound + 0.8 == pytest.approx(lower, abs=1e-9) if wrong < n else bound + 0.8 == 0.0
        # The bound and the test agree: certified exactly when the lower bound clears the target.
        assert (p <= 1 - CONFIDENCE) == (bound >= -1e-9), (wrong, p, bound)


def test_the_betting_test_is_valid_at_the_boundary_and_adapts_to_low_variance() -> None:
    """Losses drawn with mean exactly at the level (the hardest null): rejected at most δ of the time.
    And a paired comparison where the candidate equals the reference on most prompts is certified
    from few prompts, where a test blind to the pairing (Hoeffding) would need thousands."""
    rng = np.random.default_rng(0)
    level = 0.4
    values, weights = np.array([0.0, 0.4, 1.0]), np.array([0.3, 0.5, 0.2])  # mean 0.4
    assert values @ weights == pytest.approx(level)
    losses = rng.choice(values, p=weights, size=(4000, 60))
    rate = float((p_values(Risk(losses, level, False), CONFIDENCE) <= 0.1).mean())
    print(f"betting test, true mean at the level: rejected in {rate:.3f} of 4000 samples (δ = 0.1)")
    assert rate <= 0.1 + 3 * math.sqrt(0.09 / 4000)

    n = 300
    reference = (rng.random(n) < 0.8).astype(float)
    candidate = reference.copy()
    gains = np.flatnonzero(reference == 0)[:6]
    candidate[gains] = 1.0  # right where the reference is wrong, 6 times; never worse
    cert = certify(candidate[None, :], Floor(reference=reference, at=1.0), CONFIDENCE)
    assert cert.rejected == 1 and cert.bound is not None and cert.bound > 0
    hoeffding = math.exp(-2 * n * (6 / n / 2) ** 2)  # the same mean difference, range-only bound
    assert hoeffding > 0.9


def test_fixed_sequence_stops_at_the_first_failure_and_tests_no_further() -> None:
    assert fixed_sequence(np.array([0.01, 0.05, 0.2, 0.01]), CONFIDENCE) == 2
    assert fixed_sequence(np.array([0.5, 0.01]), CONFIDENCE) == 0
    assert fixed_sequence(np.array([0.0, 0.0]), CONFIDENCE) == 2
    n = 200
    good = np.ones((20, n))
    bad = np.zeros((20, n))
    cert = certify(np.vstack([good, bad]), Floor(quality=0.9), CONFIDENCE, sure=0)
    assert cert.rejected == 20 and cert.chosen == 19
    assert np.isnan(cert.p_values[32:]).all()  # tested in chunks of 16: the last chunk never ran
    # A sure candidate is rejected without a test, and the sequence goes on after it.
    cert = certify(np.vstack([bad[:1], good[:1]]), Floor(quality=0.9), CONFIDENCE, sure=1)
    assert cert.rejected == 2
    with pytest.raises(GuaranteeError, match="confidence"):
        certify(good, Floor(quality=0.9), 1.0)
    with pytest.raises(GuaranteeError, match="in \\[0, 1\\]"):
        certify(good * 2, Floor(quality=0.9), CONFIDENCE)


def test_prompts_needed_grows_as_the_margin_shrinks() -> None:
    rng = np.random.default_rng(1)
    wide = (rng.random(100) < 0.95).astype(float)
    narrow = (rng.random(100) < 0.86).astype(float)
    a = prompts_needed(wide, Floor(quality=0.8), CONFIDENCE)
    b = prompts_needed(narrow, Floor(quality=0.8), CONFIDENCE)
    assert a is not None and b is not None and a < b
    assert prompts_needed(np.zeros(100), Floor(quality=0.8), CONFIDENCE) is None  # it misses: never
    reference = (rng.random(100) < 0.9).astype(float)
    paired = prompts_needed(reference, Floor(reference=reference, at=0.95), CONFIDENCE)
    assert paired is not None and paired > 0


def test_too_thin_chooses_the_reference_and_says_how_many_prompts_would_save() -> None:
    n = 40
    margin = np.linspace(0.0, 1.0, n)
    data = dataset(
        {
            "small": arrays((margin > 0.2).astype(float), 1e-6, margin=margin),
            "large": arrays(np.ones(n), 1e-5, margin=np.full(n, 0.9)),
        }
    )
    choice = choose(data, ["small", "large"], Match("large", at=0.9))
    assert choice.policy == Policy.single("t", "large") and choice.guaranteed and not choice.refused
    assert choice.bound == 0.0 and "by definition" in choice.message
    assert choice.thin is not None and choice.thin.prompts is not None and choice.thin.prompts > n
    assert choice.thin.policy.models == ["small", "large"]
    # A quality target nothing passes: the best single model, no guarantee, refused.
    failed = choose(data, ["small", "large"], MinQuality(0.99))
    assert failed.policy == Policy.single("t", "large") and not failed.guaranteed and failed.refused
    assert failed.message.startswith("No guarantee")


# --- coverage on a synthetic herd whose truth is known --------------------------------------------
#
# A population of 50,000 prompts (herd.policy.synthetic): small is right on ~62%, large on ~85%;
# small's first-token margin carries a signal of its correctness, so cascades trade quality for
# cost. A calibration sample is n prompts drawn i.i.d. from the population; a policy's truth is its
# replay on the whole population, which a new prompt is drawn from.
#
# Monte-Carlo margin: the measured rate over R independent seeds has standard deviation
# sqrt(c(1-c)/R) when the true rate is the confidence c; at c = 0.9 and R = 300 that is 0.0173, and
# we assert rate >= c - 3 sd = 0.848: a valid method fails this by chance with probability ~0.1%.
SEEDS = 300
MODELS = {"models": ("small", "large"), "skills": (0.5, 2.0), "usd": (1e-6, 2e-5), "signal": 1.5}
TARGETS: tuple[Target, ...] = (MinQuality(0.8), Match("large", at=0.95))


@pytest.fixture(scope="module")
def population() -> tuple[object, dict[str, float]]:
    pop = synthetic(50_000, seed=12345, error_rate=0.0, **MODELS)  # type: ignore[arg-type]
    return pop, {}


def _truth(pop: object, cache: dict[str, float], policy: Policy) -> float:
    text = policy.to_text()
    if text not in cache:
        cache[text] = replay(pop, policy).quality  # type: ignore[arg-type]
    return cache[text]


def _run(population: tuple[object, dict[str, float]], n: int, method: str, seeds: int) -> dict[str, float]:
    """Per target: the share of seeds with no broken promise (for the guarantee: not certified, or
    certified and the truth meets the target; for the point estimate every choice is a claim)."""
    pop, cache = population
    large = _truth(pop, cache, Policy.single("synthetic", "large"))
    rates = {}
    for target in TARGETS:
        floor = target.quality if isinstance(target, MinQuality) else getattr(target, "at", 1.0) * large
        kept = saved = 0
        for seed in range(seeds):
            sample = draw(pop, n, seed)  # type: ignore[arg-type]
            try:
                choice = choose(
                    sample,
                    ["small", "large"],
                    target,
                    measures=("first_token_margin",),
                    method=method,
                    seed=seed,
                    n_resamples=10,
                    advise=False,
                )
            except UnreachableTargetError:  # the point estimate found nothing: it promises nothing
                kept += 1
                continue
            claimed = choice.guaranteed or method == "point"
            kept += not claimed or _truth(pop, cache, choice.policy) >= floor - 1e-12
            saved += claimed and choice.policy != Policy.single("synthetic", "large")
        rates[repr(target)] = kept / seeds
        rates[f"saved {target!r}"] = saved / seeds
    return rates


@pytest.mark.parametrize("n", [20, 50, 200])
def test_the_chosen_policy_meets_the_target_at_least_as_often_as_the_confidence(
    population: tuple[object, dict[str, float]], n: int
) -> None:
    rates = _run(population, n, "guarantee", SEEDS)
    for target in TARGETS:
        print(
            f"n={n} guarantee at {CONFIDENCE:.0%}, {target}: target met (or nothing promised) in "
            f"{rates[repr(target)]:.3f} of {SEEDS} samples; a cheaper policy than large alone "
            f"promised in {rates[f'saved {target!r}']:.3f}"
        )
        assert rates[repr(target)] >= CONFIDENCE - 3 * math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / SEEDS)
    if n == 200:  # not vacuous: with 200 prompts the guarantee does save
        assert all(rates[f"saved {t!r}"] >= 0.5 for t in TARGETS), rates


def test_the_point_estimate_fails_that_check_on_small_samples(
    population: tuple[object, dict[str, float]],
) -> None:
    seeds = 150
    rates = _run(population, 20, "point", seeds)
    for target in TARGETS:
        print(f"n=20 point estimate, {target}: target met in {rates[repr(target)]:.3f} of {seeds} samples")
        assert rates[repr(target)] < CONFIDENCE - 3 * math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / seeds)

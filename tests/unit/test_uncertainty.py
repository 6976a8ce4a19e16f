"""Uncertainty measures against values computed by hand."""

import math

import pytest

from herd.backends.base import TokenLogprob
from herd.cascade.uncertainty import NoTokensError, entropy, margin, measure

ln = math.log


def tok(text: str, p: float, *alts: tuple[str, float], special: bool = False) -> TokenLogprob:
    return TokenLogprob(text, ln(p), tuple((t, ln(q)) for t, q in ((text, p), *alts)), special)


def test_margin_is_top1_minus_top2_probability() -> None:
    assert margin(tok("Paris", 0.7, ("Lyon", 0.2), ("Nice", 0.05))) == pytest.approx(0.5)


def test_margin_when_the_chosen_token_is_missing_from_the_top_list() -> None:
    # TGI may leave the sampled token out of top_tokens; it still counts as a candidate.
    token = TokenLogprob("A", ln(0.3), (("B", ln(0.6)),))
    assert margin(token) == pytest.approx(0.6 - 0.3)


def test_margin_with_one_known_alternative_uses_the_tail_bound() -> None:
    assert margin(TokenLogprob("A", ln(0.8), ())) == pytest.approx(0.8 - 0.2)


def test_entropy_renormalizes_the_top_k() -> None:
    # top-2 with p = 0.6 and 0.2 renormalize to 0.75 / 0.25.
    expected = -(0.75 * ln(0.75) + 0.25 * ln(0.25))
    assert entropy(tok("a", 0.6, ("b", 0.2))) == pytest.approx(expected)
    assert entropy(tok("a", 1.0)) == pytest.approx(0.0)


def test_measure_aggregates_and_skips_special_tokens() -> None:
    tokens = [
        tok("Yes", 0.5, ("No", 0.5)),
        tok(" sir", 0.9, ("!", 0.1)),
        tok("</s>", 0.01, ("x", 0.99), special=True),
    ]
    u = measure(tokens)
    h1 = ln(2)
    h2 = -(0.9 * ln(0.9) + 0.1 * ln(0.1))
    assert u.first_token_margin == pytest.approx(0.0)
    assert u.mean_entropy == pytest.approx((h1 + h2) / 2)
    assert u.max_entropy == pytest.approx(h1)
    assert u.mean_nll == pytest.approx(-(ln(0.5) + ln(0.9)) / 2)
    assert u.value("mean_nll") == u.mean_nll


def test_no_scorable_tokens_is_an_error() -> None:
    with pytest.raises(NoTokensError):
        measure([tok("</s>", 0.9, special=True)])


def test_alternatives_sharing_one_text_are_distinct_tokens() -> None:
    # Byte-fallback tokens (emoji, CJK, curly quotes) all decode to U+FFFD: the chosen one is listed
    # first, as servers send it; a later, lower entry with the same text must not replace it.
    token = TokenLogprob("\ufffd", ln(0.90), (("\ufffd", ln(0.90)), ("\ufffd", ln(0.06)), ("x", ln(0.02))))
    assert margin(token) == pytest.approx(0.84)
    p = [0.90, 0.06, 0.02]
    assert entropy(token) == pytest.approx(-sum(q / sum(p) * ln(q / sum(p)) for q in p))
    # The chosen token left out of the list while a same-text alternative is there: both count.
    missing = TokenLogprob("\ufffd", ln(0.50), (("\ufffd", ln(0.30)), ("x", ln(0.10))))
    assert margin(missing) == pytest.approx(0.20)


def test_the_chosen_token_listed_again_with_a_rounded_logprob_counts_once() -> None:
    token = TokenLogprob("Yes", ln(0.8), (("Yes", ln(0.8) + 1e-7), ("No", ln(0.15))))
    assert margin(token) == pytest.approx(0.65)

"""Malformed and transient answers real servers send, through the real backend code and the double:
each becomes a named error (retryable or permanent), never an exception the pipeline cannot record."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

import pytest

from herd.backends.base import (
    Generation,
    GenerationRequest,
    MissingLogprobsError,
    PermanentError,
    Prompt,
    RetryableError,
    Timing,
    TokenLogprob,
)
from herd.backends.logprobs import alternatives, chosen_logprob, number
from herd.backends.registry import make_backend
from herd.backends.stops import without_stop
from herd.backends.transport import retry_after_s
from herd.cascade.uncertainty import entropy, margin
from herd.herdfile.model import ModelConfig, Retries

CHAT = Prompt(mode="chat", messages=(("user", "What is the capital of France?"),))
TEXT = Prompt(mode="completion", text="Q: What is the capital of France?\nA:")
EVERY_PATH = [("tgi", "", TEXT), ("openai", "/v1", CHAT), ("openai", "/v1", TEXT)]


def backend(protocol: Literal["tgi", "openai"], url: str):  # type: ignore[no-untyped-def]
    return make_backend("m", ModelConfig(protocol=protocol, endpoints=[url], timeout_s=5.0))


def request(prompt: Prompt, stop: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_new_tokens=16, top_logprobs=5, stop=stop)


@pytest.mark.parametrize(("protocol", "suffix", "prompt"), EVERY_PATH)
@pytest.mark.parametrize("quirk", ["null_logprob", "nan_logprob"])
def test_a_null_or_nan_logprob_is_a_permanent_error_with_a_reason(
    double, protocol, suffix, prompt, quirk
) -> None:
    double.script([{"match": "", "text": " Paris", "quirk": quirk}])
    with pytest.raises(PermanentError) as info:
        backend(protocol, double.model_url("m") + suffix).generate(request(prompt))
    assert not isinstance(info.value, RetryableError)
    message = str(info.value)
    assert "logprob" in message or "NaN" in message, message
    assert "RecursionError" not in message and "TypeError" not in message


@pytest.mark.parametrize(("protocol", "suffix", "prompt"), EVERY_PATH)
@pytest.mark.parametrize("status", [424, 408, 429, 500, 502, 503])
def test_transient_statuses_including_tgi_424_are_retryable(double, protocol, suffix, prompt, status) -> None:
    # TGI answers 424 when a shard fails mid-generation (CUDA out of memory under load).
    double.script([{"match": "", "text": "x", "errors": [status]}])
    with pytest.raises(RetryableError) as info:
        backend(protocol, double.model_url("m") + suffix).generate(request(prompt))
    assert info.value.status == status


@pytest.mark.parametrize(("protocol", "suffix", "prompt"), EVERY_PATH)
@pytest.mark.parametrize("status", [429, 503])
def test_a_servers_retry_after_is_kept_and_the_retry_waits_at_least_that(
    double, protocol, suffix, prompt, status
) -> None:
    double.script([{"match": "", "text": "x", "errors": [status], "retry_after": "7"}])
    with pytest.raises(RetryableError) as info:
        backend(protocol, double.model_url("m") + suffix).generate(request(prompt))
    assert info.value.retry_after_s == 7.0
    retries = Retries(backoff_s=0.01, backoff_max_s=60.0)
    delays = [retries.delay_s(0, info.value.retry_after_s) for _ in range(50)]
    assert all(7.0 <= d <= 8.0 for d in delays), delays
    assert len(set(delays)) > 1  # jittered: workers told to wait do not all come back at once
    # Never past backoff_max_s: the retry is a delayed broker message (visibility timeout).
    assert Retries(backoff_s=0.01, backoff_max_s=5.0).delay_s(0, 7.0) == 5.0


def test_retry_after_as_seconds_or_http_date_and_nonsense_is_ignored() -> None:
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s({"retry-after": "120"}, now) == 120.0
    assert retry_after_s({"retry-after": "Mon, 30 Nov 2026 12:00:30 GMT"}, now) == 30.0
    assert retry_after_s({"retry-after": "Mon, 30 Nov 2026 11:00:00 GMT"}, now) == 0.0  # past: now
    assert retry_after_s({"retry-after": "soon"}, now) is None
    assert retry_after_s({"retry-after": "-5"}, now) is None
    assert retry_after_s({}, now) is None and retry_after_s(None, now) is None
    # A date is the server's clock: measured from the response's own Date, not this host's clock (here
    # 10 minutes ahead of the server's, which would make it "past": no wait at all).
    ahead = datetime(2026, 11, 30, 12, 10, 0, tzinfo=UTC)
    served = {"retry-after": "Mon, 30 Nov 2026 12:00:30 GMT", "date": "Mon, 30 Nov 2026 12:00:00 GMT"}
    assert retry_after_s(served, ahead) == 30.0
    assert retry_after_s({**served, "date": "yesterday"}, ahead) == 0.0  # unreadable Date: this clock
    # Without a Retry-After the delay is the plain full-jitter backoff.
    assert all(0 <= Retries(backoff_s=1.0).delay_s(2) <= 4.0 for _ in range(50))


@pytest.mark.parametrize(("protocol", "suffix", "prompt"), [("tgi", "", TEXT), ("openai", "/v1", CHAT)])
def test_alternatives_sharing_the_chosen_tokens_text_keep_their_own_probability(
    double, protocol, suffix, prompt
) -> None:
    # Byte-fallback tokens all decode to U+FFFD: three distinct tokens with one text.
    double.script(
        [{"match": "", "text": "\ufffd ok", "first": [0.90, 0.06, 0.02], "quirk": "same_text_alternatives"}]
    )
    out = backend(protocol, double.model_url("m") + suffix).generate(request(prompt))
    assert [t for t, _ in out.tokens[0].top] == ["\ufffd"] * 3
    assert margin(out.tokens[0]) == pytest.approx(0.90 - 0.06)
    p = [0.90, 0.06, 0.02]
    assert entropy(out.tokens[0]) == pytest.approx(-sum(q / sum(p) * math.log(q / sum(p)) for q in p))


@pytest.mark.parametrize(("protocol", "suffix", "prompt"), EVERY_PATH)
def test_the_stop_sequence_is_never_part_of_the_answer(double, protocol, suffix, prompt) -> None:
    # TGI keeps the stop text in generated_text (the double does too); OpenAI servers cut it off.
    double.script([{"match": "", "text": " Paris\nQ: and Spain?\nA: Madrid"}])
    out = backend(protocol, double.model_url("m") + suffix).generate(request(prompt, stop=("\nQ:",)))
    assert out.text == " Paris"
    assert "".join(t.token for t in out.tokens) == " Paris"


def generation(text: str, *pieces: str) -> Generation:
    tokens = tuple(TokenLogprob(p, math.log(0.9)) for p in pieces)
    return Generation(text, tokens, None, len(tokens), "stop_sequence", Timing(latency_s=0.1))


def test_without_stop_removes_only_a_trailing_stop_and_the_tokens_inside_it() -> None:
    out = without_stop(generation(" Paris\nQ:", " Paris", "\n", "Q", ":"), ("\nQ:", "###"))
    assert out.text == " Paris" and [t.token for t in out.tokens] == [" Paris"]
    assert out.generated_tokens == 4  # the server generated the stop; its cost counts
    # A token straddling answer and stop is kept; a stop in the middle is content, left alone.
    straddle = without_stop(generation("Paris.\n\n", "Paris", ".\n", "\n"), ("\n\n",))
    assert straddle.text == "Paris." and [t.token for t in straddle.tokens] == ["Paris", ".\n"]
    same = generation("a ### b", "a", " ###", " b")
    assert without_stop(same, ("###",)) is same
    # The longest matching stop wins.
    assert without_stop(generation("x</a>", "x", "</a>"), ("a>", "</a>")).text == "x"


def test_logprob_values_from_the_wire() -> None:
    assert number(None) is None and number(math.nan) is None and number("NaN") is None
    assert number(True) is None and number([1.0]) is None and number("-0.5") == -0.5
    assert chosen_logprob(-0.25, "e") == -0.25
    for bad in (None, math.nan, math.inf, -math.inf, "x"):
        with pytest.raises(MissingLogprobsError, match="without a usable logprob"):
            chosen_logprob(bad, "http://e")
    kept = alternatives(
        [("a", -0.1), ("b", None), ("c", math.nan), ("d", -math.inf), ("e", math.inf), (None, -2)]
    )
    assert kept == (("a", -0.1), ("d", -math.inf), ("", -2.0))


def test_an_unreadable_body_is_retryable_but_a_wrong_shape_is_permanent() -> None:
    import json

    from herd.backends import transport
    from herd.backends.base import PermanentError, RetryableError

    cut = json.JSONDecodeError("Unterminated string", '{"choices": [{"te', 17)
    try:
        raise ValueError("could not parse the response") from cut
    except ValueError as wrapped:
        assert isinstance(transport.map_exception(wrapped, "http://e"), RetryableError)
    assert isinstance(transport.map_exception(cut, "http://e"), RetryableError)
    assert isinstance(transport.malformed(KeyError("choices"), "http://e"), PermanentError)

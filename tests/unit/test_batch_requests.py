"""OpenAI request bodies and batch lines, without a database: the checks, what a model gets, what the
caller gets back, and which route a `model` names."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.completion_choice import Logprobs

from herd.backends.base import TokenLogprob
from herd.batch import routes
from herd.batch.format import TOO_LONG, LineProblem, looks_like_batch, numbered_lines, parse
from herd.cascade.requests import (
    CHAT,
    COMPLETIONS,
    TRANSCRIPT_STOP,
    RequestError,
    check,
    generation_request,
    returned_logprobs,
)
from herd.herdfile.model import ConfigError, GenerationParams, ModelConfig, load_herd

OPENAI = ModelConfig(protocol="openai", endpoints=["http://127.0.0.1:9/v1"])
TGI = ModelConfig(protocol="tgi", endpoints=["http://127.0.0.1:9"], prompt_mode="completion")
PARAMS = GenerationParams(max_new_tokens=32, stop=["\n\n"], temperature=0.0, top_logprobs=5)
# A batch line nested deeper than any interpreter stack: json's parser recurses once per level.
DEEP = b'{"custom_id": "a", "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def chat(**body: object) -> dict[str, object]:
    return {"model": "herd", "messages": [{"role": "user", "content": "Hi"}], **body}


# --- the line format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_lines_are_numbered_like_an_editor_whatever_the_chunking(size: int) -> None:
    text = b'{"a": 1}\n\n  \n{"b": 2}\r\n{"c": "x"}'
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    assert list(numbered_lines(chunks)) == [(1, b'{"a": 1}'), (4, b'{"b": 2}\r'), (5, b'{"c": "x"}')]


def test_an_overlong_line_is_skipped_as_it_streams_and_the_next_one_keeps_its_number() -> None:
    chunks = [b'{"a": 1}\n', b"x" * 50, b"x" * 50, b'\n{"b": 2}\n', b"y" * 200]
    assert list(numbered_lines(chunks, max_line=64)) == [
        (1, b'{"a": 1}'),
        (2, TOO_LONG),
        (3, b'{"b": 2}'),
        (4, TOO_LONG),
    ]


def line(**fields: object) -> bytes:
    base: dict[str, object] = {"custom_id": "r1", "method": "POST", "url": CHAT, "body": chat()}
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "code", "param", "says"),
    [
        (b"{not json", "invalid_json_line", None, "not valid JSON"),
        (b"[1, 2]", "invalid_json_line", None, "JSON object"),
        (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"x": NaN}}',
         "invalid_json_line", None, "NaN"),
        (b"\xff\xfe", "invalid_json_line", None, "not UTF-8"),
        (DEEP, "invalid_json_line", None, "nested too deeply"),
        (json.dumps({"method": "POST", "url": CHAT, "body": chat()}).encode(), "missing_required_parameter",
         "custom_id", "missing"),
        (line(custom_id=7), "invalid_value", "custom_id", "string"),
        (line(custom_id="x" * 600), "invalid_value", "custom_id", "longer than"),
        (line(method="GET"), "invalid_value", "method", "POST"),
        (line(body=[1]), "invalid_value", "body", "object"),
        (line(body={"messages": []}), "missing_required_parameter", "body.model", "body.model"),
        (line(body=chat(messages=[{"role": "user", "content": "a\u0000b"}])), "invalid_value", None,
         "U+0000"),
        (line().replace(b'"Hi"', b'"\\ud83d"'), "invalid_value", None, "unpaired surrogate"),
    ],
)  # fmt: skip
def test_a_bad_line_is_one_error_with_its_line_code_and_field(
    raw: bytes, code: str, param: str, says: str
) -> None:
    with pytest.raises(LineProblem) as caught:
        parse(12, raw)
    error = caught.value.error
    assert (error.line, error.code, error.param) == (12, code, param)
    assert says in error.message
    assert error.where("in.jsonl").startswith("in.jsonl:12: ")


def test_a_line_nested_past_the_stack_is_not_taken_for_a_batch_line() -> None:
    assert looks_like_batch(line())
    assert not looks_like_batch(DEEP)


def test_a_first_line_may_start_with_a_byte_order_mark() -> None:
    assert parse(1, b"\xef\xbb\xbf" + line()).custom_id == "r1"
    with pytest.raises(LineProblem):
        parse(2, b"\xef\xbb\xbf" + line())


# --- request bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body", "param", "says"),
    [
        ("/v1/embeddings", {"model": "herd", "input": "x"}, "url", "Herd answers"),
        (CHAT, chat(stream=True), "stream", "stream"),
        (CHAT, chat(stream="True"), "stream", "stream"),  # vLLM's own test input: a string, read as true
        (CHAT, chat(n=2), "n", "one answer"),
        (CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools", "tool calls"),
        (CHAT, chat(tool_choice="required"), "tool_choice", "tool_choice"),
        (CHAT, chat(top_logprobs=2), "top_logprobs", "logprobs: true"),
        (CHAT, chat(top_logprobs=21, logprobs=True), "top_logprobs", "less than or equal to 20"),
        (CHAT, chat(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (CHAT, chat(temperature=3), "temperature", "less than or equal to 2"),
        (CHAT, chat(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (CHAT, chat(messages=[]), "messages", "at least 1"),
        (CHAT, chat(messages=[{"role": "tool", "content": "x"}]), "messages.0.role", "'system'"),
        (CHAT, chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
         "messages.0.content.0", "text only"),
        (CHAT, chat(messages=[{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]),
         "messages.0.tool_calls", "tool calls"),
        (COMPLETIONS, {"model": "herd", "prompt": ["a", "b"]}, "prompt", "one prompt"),
        (COMPLETIONS, {"model": "herd", "prompt": "a", "echo": True}, "echo", "echo"),
        (COMPLETIONS, {"model": "herd", "prompt": "a", "best_of": 3}, "best_of", "best_of"),
        (COMPLETIONS, {"model": "herd", "prompt": "a", "suffix": "z"}, "suffix", "suffix"),
        (COMPLETIONS, {"model": "herd"}, "prompt", "required"),
    ],
)  # fmt: skip
def test_what_herd_cannot_honour_is_refused_naming_the_field(
    url: str, body: dict[str, Any], param: str, says: str
) -> None:
    with pytest.raises(RequestError) as caught:
        check(url, body, [OPENAI])
    assert caught.value.param == param
    assert says in str(caught.value)


def test_a_tgi_model_on_the_route_limits_what_may_pass_through() -> None:
    check(CHAT, chat(top_p=0.9, seed=3, logprobs=True, top_logprobs=5), [OPENAI, TGI])
    with pytest.raises(RequestError, match="response_format.*TGI") as caught:
        check(CHAT, chat(response_format={"type": "json_object"}), [OPENAI, TGI])
    assert caught.value.code == "unsupported_parameter"
    with pytest.raises(RequestError, match="at most 5 alternatives"):
        check(CHAT, chat(logprobs=True, top_logprobs=8), [OPENAI, TGI])
    check(CHAT, chat(response_format={"type": "json_object"}, logprobs=True, top_logprobs=8), [OPENAI])


def test_a_checked_request_is_stored_as_sent_with_its_transcript_as_text() -> None:
    body = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Capital "}, {"type": "text", "text": "of France?"}],
            },
        ]
    )
    checked = check(CHAT, body)
    assert checked.text == "System: Be brief.\nUser: Capital of France?"
    assert checked.fields() == {"request": {"url": CHAT, "body": body}}
    assert check(COMPLETIONS, {"model": "m", "prompt": ["Once"]}).text == "Once"


def test_a_chat_model_gets_the_messages_and_the_callers_parameters_and_herd_adds_only_logprobs() -> None:
    body = chat(
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=7,
        temperature=0.4,
        top_p=0.9,
        seed=11,
        stop="END",
        response_format={"type": "json_object"},
        metadata={"team": "a"},
        store=True,
        top_k=40,
    )
    request = generation_request("ignored", check(CHAT, body).fields(), "chat", PARAMS)
    assert request.prompt.mode == "chat"
    assert request.prompt.as_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert (request.max_new_tokens, request.temperature, request.stop) == (7, 0.4, ("END",))
    assert request.extra == {
        "top_p": 0.9,
        "seed": 11,
        "response_format": {"type": "json_object"},
        "top_k": 40,
    }
    assert request.top_logprobs == PARAMS.top_logprobs and request.caller_logprobs is None


def test_what_the_caller_leaves_out_comes_from_the_herd_file_but_never_its_stop_sequences() -> None:
    request = generation_request("", check(CHAT, chat()).fields(), "chat", PARAMS)
    assert (request.max_new_tokens, request.temperature, request.stop) == (32, 0.0, ())


def test_a_completion_mode_model_gets_a_transcript_that_stops_at_the_next_user_turn() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "A."},
            {"role": "user", "content": "And?"},
        ],
        stop=["###"],
    )
    request = generation_request("", check(CHAT, body).fields(), "completion", PARAMS)
    assert request.prompt.mode == "completion"
    assert request.prompt.text == "System: S\nUser: Q?\nAssistant: A.\nUser: And?\nAssistant:"
    assert request.stop == ("###", TRANSCRIPT_STOP)


def test_a_legacy_completions_body_goes_to_the_completions_endpoint_on_any_model() -> None:
    body = {"model": "herd", "prompt": "Once upon", "max_tokens": 5, "logprobs": 2}
    request = generation_request("", check(COMPLETIONS, body).fields(), "chat", PARAMS)
    assert (request.prompt.mode, request.prompt.text, request.max_new_tokens) == (
        "completion",
        "Once upon",
        5,
    )
    assert request.caller_logprobs is not None and request.caller_logprobs.top == 2


def test_herd_asks_for_the_larger_of_its_own_and_the_callers_alternatives() -> None:
    asked = generation_request("", check(CHAT, chat(logprobs=True, top_logprobs=9)).fields(), "chat", PARAMS)
    assert asked.top_logprobs == 9 and asked.caller_logprobs is not None and asked.caller_logprobs.top == 9
    few = generation_request("", check(CHAT, chat(logprobs=True)).fields(), "chat", PARAMS)
    assert few.top_logprobs == PARAMS.top_logprobs and few.caller_logprobs is not None
    assert few.caller_logprobs.top == 0


def test_a_document_under_a_chat_task_is_one_user_message() -> None:
    request = generation_request("Summarize this.", {}, "chat", PARAMS)
    assert request.prompt.as_messages() == [{"role": "user", "content": "Summarize this."}]


TOKENS = (
    TokenLogprob(
        "Par", math.log(0.9), (("Par", math.log(0.9)), ("Lon", math.log(0.05)), ("Ber", math.log(0.01)))
    ),
    TokenLogprob("is", math.log(0.99), (("is", math.log(0.99)), ("ma", math.log(0.005)))),
)


def test_the_caller_gets_only_the_alternatives_it_asked_for_in_openais_own_types() -> None:
    from herd.backends.base import CallerLogprobs

    assert returned_logprobs(TOKENS, None) is None
    shaped = returned_logprobs(TOKENS, CallerLogprobs("chat", 1))
    parsed = ChoiceLogprobs.model_validate(shaped)
    assert parsed.content is not None and [t.token for t in parsed.content] == ["Par", "is"]
    assert [len(t.top_logprobs) for t in parsed.content] == [1, 1]
    assert parsed.content[0].bytes == list(b"Par")
    legacy = Logprobs.model_validate(returned_logprobs(TOKENS, CallerLogprobs("completions", 2)))
    assert legacy.tokens == ["Par", "is"] and legacy.text_offset == [0, 3]
    assert legacy.top_logprobs is not None and set(legacy.top_logprobs[0]) == {"Par", "Lon"}


# --- which route a `model` names -------------------------------------------------------------------------

HERD = """\
models:
  small: {protocol: openai, endpoints: http://127.0.0.1:9/v1, escalation: {next: large, threshold: 0.5}}
  large: {protocol: openai, endpoints: http://127.0.0.1:9/v1}
tasks:
  qa: {kind: qa}
  chat: {kind: chat}
  support: {kind: chat, entry: large}
%s"""


def herd_file(tmp_path: Path, extra: str = "routes: {herd: chat, gpt-4o-mini: support, big: large}") -> Path:
    path = tmp_path / "herd.yaml"
    path.write_text(HERD % extra)
    return path


def test_a_name_is_a_route_a_chat_task_or_a_model_alone(tmp_path: Path) -> None:
    herd = load_herd(herd_file(tmp_path))
    assert routes.resolve(herd, "herd") == routes.Target("chat")
    assert routes.resolve(herd, "gpt-4o-mini") == routes.Target("support")
    assert routes.resolve(herd, "support") == routes.Target("support")
    assert routes.resolve(herd, "small") == routes.Target("chat", "small")
    assert routes.resolve(herd, "big") == routes.Target("chat", "large")
    assert routes.resolve(herd, "small").kind == "direct" and routes.resolve(herd, "herd").kind == "live"
    with pytest.raises(routes.UnknownModelError, match="'qa' is not served .*herd, gpt-4o-mini, big, chat"):
        routes.resolve(herd, "qa")  # a task, but not a chat task


@pytest.mark.parametrize(
    ("routes_yaml", "says"),
    [
        ("routes: {small: chat}", "routes.small: 'small' already names a model"),
        ("routes: {x: qa}", "routes.x: task 'qa' is a qa task; a route needs a chat task"),
        ("routes: {x: nope}", "routes.x: unknown chat task or model 'nope'"),
    ],
)
def test_a_bad_route_fails_at_load_naming_file_line_and_key(
    tmp_path: Path, routes_yaml: str, says: str
) -> None:
    path = herd_file(tmp_path, routes_yaml)
    with pytest.raises(ConfigError, match=f"{path}:8: {says}"):
        load_herd(path)


def test_a_chat_task_takes_no_template(tmp_path: Path) -> None:
    path = tmp_path / "herd.yaml"
    path.write_text((HERD % "").replace("chat: {kind: chat}", 'chat: {kind: chat, chat: "x {text}"}'))
    with pytest.raises(ConfigError, match="tasks.chat.chat: a chat task sends each request's messages"):
        load_herd(path)

"""Drive tests/support/endpoint.py with the real huggingface_hub client, raw httpx and its own CLI.

Observed with huggingface_hub 2.4 (asserted below):
* text_generation(details=True): ``details.tokens`` are ``TextGenerationOutputToken`` objects but
  ``details.top_tokens`` stay plain dicts (the parser only recurses one list level).
* Unknown response fields (chat ``bytes``, ``object``) are kept as dict items / extra attributes.
* text_generation turns TGI's ``error_type`` into its own exceptions, which are *not* HfHubHTTPError:
  429 -> OverloadedError, 422/400 -> ValidationError, 5xx -> GenerationError
  (the HfHubHTTPError is chained as ``__cause__``).
* chat_completion raises HfHubHTTPError with ``.response.status_code`` (400 -> BadRequestError, a subclass).
* Client-side timeouts raise InferenceTimeoutError for both.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from huggingface_hub import (
    ChatCompletionOutputLogprob,
    InferenceClient,
    TextGenerationOutput,
    TextGenerationOutputDetails,
    TextGenerationOutputToken,
)
from huggingface_hub.errors import (
    BadRequestError,
    GenerationError,
    HfHubHTTPError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
    ValidationError,
)

from tests.support.endpoint import DEFAULT_TEXT, EndpointDouble, Rule

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[EndpointDouble]:
    with EndpointDouble() as double:
        yield double


@pytest.fixture
def double(server: EndpointDouble) -> EndpointDouble:
    server.reset()
    return server


def _client(double: EndpointDouble, model: str, timeout: float = 5) -> InferenceClient:
    return InferenceClient(model=double.model_url(model), timeout=timeout)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _details(out: TextGenerationOutput) -> TextGenerationOutputDetails:
    assert out.details is not None, "no details in the TGI response"
    return out.details


def _top_tokens(details: TextGenerationOutputDetails) -> list[list[dict[str, Any]]]:
    assert details.top_tokens is not None, "no top_tokens in the TGI response"
    return cast(list[list[dict[str, Any]]], details.top_tokens)  # hf_hub 2.4 leaves these as dicts


def _chat_logprobs(out: Any) -> list[ChatCompletionOutputLogprob]:
    logprobs = out.choices[0].logprobs
    assert logprobs is not None, "no logprobs in the chat response"
    return list(logprobs.content)


def _status_of(exc: BaseException) -> int:
    """HTTP status behind an hf_hub error: on the error itself, or on the HfHubHTTPError it chains."""
    http_error = exc if isinstance(exc, HfHubHTTPError) else exc.__cause__
    assert isinstance(http_error, HfHubHTTPError)
    return int(http_error.response.status_code)


def test_text_generation_details_through_real_client(double: EndpointDouble) -> None:
    rule = {"model": "a", "match": "capital", "text": " Paris is the capital.", "first": [0.6, 0.3, 0.05]}
    double.script([rule | {"rest_p": 0.9}])
    out = _client(double, "a").text_generation(
        "What is the capital of France?", details=True, top_n_tokens=3, max_new_tokens=10, do_sample=False
    )
    assert out.generated_text == " Paris is the capital."
    details = _details(out)
    assert details.finish_reason == "eos_token" and details.generated_tokens == 4
    assert details.prefill == [] and details.seed is None
    assert [t.text for t in details.tokens] == [" Paris", " is", " the", " capital."]
    assert math.exp(details.tokens[0].logprob) == pytest.approx(0.6)
    assert [math.exp(t.logprob) for t in details.tokens[1:]] == pytest.approx([0.9] * 3)
    # hf_hub 2.4: tokens are parsed into objects, top_tokens (list[list[...]]) are left as plain dicts.
    assert isinstance(details.tokens[0], TextGenerationOutputToken)
    top = _top_tokens(details)
    assert type(top[0][0]) is dict
    assert [t["text"] for t in top[0]] == [" Paris", "<alt1>", "<alt2>"]
    assert [math.exp(t["logprob"]) for t in top[0]] == pytest.approx([0.6, 0.3, 0.05])
    assert top[0][0]["id"] == details.tokens[0].id and top[0][0]["special"] is False
    assert [len(alts) for alts in top] == [3, 2, 2, 2]  # later positions: chosen + one alternative
    assert math.exp(top[1][1]["logprob"]) == pytest.approx(0.05)  # (1 - rest_p) / 2
    call = double.calls()[-1]
    assert (call["model"], call["protocol"], call["prompt"], call["status"]) == (
        "a",
        "tgi",
        "What is the capital of France?",
        200,
    )


def test_text_generation_truncation_stop_and_plain_text(double: EndpointDouble) -> None:
    double.script([{"text": " Paris is the capital."}])
    client = _client(double, "a")
    short = _details(client.text_generation("q", details=True, max_new_tokens=2))
    assert (short.finish_reason, short.generated_tokens, short.top_tokens) == ("length", 2, None)
    assert "".join(t.text for t in short.tokens) == " Paris is"
    stopped = client.text_generation("q", details=True, stop=["the"])
    assert stopped.generated_text == " Paris is the"  # TGI keeps the stop sequence
    assert _details(stopped).finish_reason == "stop_sequence"
    assert client.text_generation("q", max_new_tokens=10) == " Paris is the capital."  # details=False -> str
    raw = httpx.post(f"{double.model_url('a')}/generate", json={"inputs": "q", "parameters": {}}, timeout=5)
    assert raw.json() == {"generated_text": " Paris is the capital."}  # serde default details=false


def test_chat_completion_logprobs_margin(double: EndpointDouble) -> None:
    double.script([{"match": "unsure", "text": "Maybe yes.", "first": [0.55, 0.4], "rest_p": 0.98}])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Are you unsure?"}]
    client = InferenceClient(base_url=double.model_url("chat-a"), timeout=5)
    out = client.chat_completion(messages, logprobs=True, top_logprobs=2, max_tokens=20)
    choice = out.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "Maybe yes.")
    assert choice.finish_reason == "stop"
    content = _chat_logprobs(out)
    assert [c.token for c in content] == ["Maybe", " yes."]
    top = content[0].top_logprobs
    assert [t.token for t in top] == ["Maybe", "<alt1>"]
    assert math.exp(top[0].logprob) - math.exp(top[1].logprob) == pytest.approx(0.15)
    assert math.exp(content[1].logprob) == pytest.approx(0.98)
    assert content[0]["bytes"] == list(b"Maybe")  # extra fields survive as dict items
    assert (out["object"], out.model, out.system_fingerprint) == ("chat.completion", "chat-a", None)
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (5, 2, 7)
    assert double.calls()[-1]["prompt"] == "Be brief.\nAre you unsure?"
    # model=URL posts to the same /v1/chat/completions; without logprobs the field is null.
    plain = _client(double, "chat-a").chat_completion(messages, max_tokens=1)
    assert (plain.choices[0].message.content, plain.choices[0].finish_reason) == ("Maybe", "length")
    assert plain.choices[0].logprobs is None
    stopped = _client(double, "chat-a").chat_completion(messages, stop=["yes"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("Maybe ", "stop")
    assert [(c["protocol"], c["model"]) for c in double.calls()] == [("chat", "chat-a")] * 3


def test_legacy_completions_raw_http(double: EndpointDouble) -> None:
    rule = {"match": "Q:", "text": " 42 is the answer", "first": [0.7, 0.2, 0.1], "rest_p": 0.95}
    double.script([rule | {"prompt_tokens": 11}])
    url = f"{double.model_url('c')}/v1/completions"
    body = {"model": "c", "prompt": "Q: life? A:", "max_tokens": 3, "logprobs": 2, "temperature": 0}
    resp = httpx.post(url, json=body, timeout=5).json()
    assert resp["object"] == "text_completion" and resp["model"] == "c"
    choice = resp["choices"][0]
    assert (choice["index"], choice["text"], choice["finish_reason"]) == (0, " 42 is the", "length")
    lp = choice["logprobs"]
    assert lp["tokens"] == [" 42", " is", " the"]
    assert [math.exp(x) for x in lp["token_logprobs"]] == pytest.approx([0.7, 0.95, 0.95])
    assert lp["top_logprobs"][0] == pytest.approx({" 42": math.log(0.7), "<alt1>": math.log(0.2)})
    assert lp["text_offset"] == [0, 3, 6]
    assert resp["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    no_lp = httpx.post(url, json={"prompt": "Q: again", "max_tokens": 50}, timeout=5).json()["choices"][0]
    assert (no_lp["text"], no_lp["logprobs"], no_lp["finish_reason"]) == (" 42 is the answer", None, "stop")
    double.script([{"text": " w" * 20}])
    capped = httpx.post(url, json={"prompt": "long"}, timeout=5).json()  # vLLM/OpenAI default max_tokens=16
    assert capped["usage"]["completion_tokens"] == 16 and capped["choices"][0]["finish_reason"] == "length"


def test_scripted_429_then_success(double: EndpointDouble) -> None:
    double.script([{"match": "busy", "errors": [429, 429], "text": "done"}])
    client = _client(double, "a")
    for _ in range(2):
        with pytest.raises(OverloadedError) as tgi_err:
            client.text_generation("busy now", details=True)
        assert not isinstance(tgi_err.value, HfHubHTTPError)  # TGI errors bypass HfHubHTTPError...
        assert _status_of(tgi_err.value) == 429  # ...but chain it
    assert client.text_generation("busy now", details=True).generated_text == "done"
    for _ in range(2):  # counters are per (model, prompt): a new prompt gets its own two errors
        with pytest.raises(HfHubHTTPError) as chat_err:
            client.chat_completion(_user("busy chat"))
        assert chat_err.value.response.status_code == 429
        assert chat_err.value.response.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert client.chat_completion(_user("busy chat")).choices[0].message.content == "done"
    with pytest.raises(OverloadedError):
        _client(double, "b").text_generation("busy now")  # ...and per model
    assert [c["status"] for c in double.calls()] == [429, 429, 200, 429, 429, 200, 429]


def test_other_error_statuses_and_timeout(double: EndpointDouble) -> None:
    double.script(
        [
            {"match": "e503", "errors": [503]},
            {"match": "e422", "errors": [422]},
            {"match": "e400", "errors": [400]},
            {"match": "slow", "delay": 1.0},
        ]
    )
    client = _client(double, "a", timeout=0.3)
    with pytest.raises(GenerationError) as gen_err:
        client.text_generation("e503")
    assert _status_of(gen_err.value) == 503
    with pytest.raises(ValidationError):
        client.text_generation("e422")
    with pytest.raises(HfHubHTTPError) as err:  # new prompt: counters are per (model, prompt), any protocol
        client.chat_completion(_user("e503 chat"))
    assert err.value.response.status_code == 503 and err.value.response.json()["error_type"] == "generation"
    with pytest.raises(BadRequestError):
        client.chat_completion(_user("e400"))
    with pytest.raises(InferenceTimeoutError):
        client.text_generation("slow")
    with pytest.raises(InferenceTimeoutError):
        client.chat_completion(_user("slow"))
    assert client.text_generation("fine") == DEFAULT_TEXT  # server unaffected by the hung-up clients


def test_rule_without_logprobs(double: EndpointDouble) -> None:
    double.script([Rule(text="plain", logprobs=False)])
    client = _client(double, "a")
    tgi = client.text_generation("x", details=True, top_n_tokens=2)
    assert tgi.generated_text == "plain" and tgi.details is None
    chat = client.chat_completion(_user("x"), logprobs=True, top_logprobs=2)
    assert chat.choices[0].message.content == "plain" and chat.choices[0].logprobs is None
    url = f"{double.model_url('a')}/v1/completions"
    raw = httpx.post(url, json={"prompt": "x", "logprobs": 2}, timeout=5)
    assert raw.json()["choices"][0]["logprobs"] is None


def test_top_n_tokens_limit(double: EndpointDouble) -> None:
    double.script([{"match": "hi", "first": [0.5, 0.2, 0.1, 0.08, 0.06, 0.04], "errors": [503]}])
    with pytest.raises(ValidationError, match="top_n_tokens"):
        _client(double, "a").text_generation("hi", details=True, top_n_tokens=6)
    body = {"inputs": "hi", "parameters": {"details": True, "top_n_tokens": 6}}
    raw = httpx.post(f"{double.model_url('a')}/generate", json=body, timeout=5)
    assert raw.status_code == 422
    message = "`top_n_tokens` must be >= 0 and <= 5. Given: 6"  # TGI's wording
    assert raw.json() == {"error": message, "error_type": "validation"}
    with pytest.raises(GenerationError):  # validation failures did not consume the scripted 503
        _client(double, "a").text_generation("hi", details=True, top_n_tokens=5)
    ok = _client(double, "a").text_generation("hi", details=True, top_n_tokens=5)
    top = _top_tokens(_details(ok))
    assert [t["text"] for t in top[0]] == ["This", "<alt1>", "<alt2>", "<alt3>", "<alt4>"]  # truncated to 5
    assert [c["status"] for c in double.calls()] == [422, 422, 503, 200]


def test_tgi_headers_and_units(double: EndpointDouble) -> None:
    double.script([{"match": "slow", "delay": 0.25, "text": "a b c d"}])
    body = {"inputs": "slow one two", "parameters": {"details": True, "max_new_tokens": 10}}
    resp = httpx.post(f"{double.model_url('h')}/generate", json=body, timeout=5)
    h = resp.headers
    assert h["x-compute-type"] == "cpu"
    assert 0.25 <= float(h["x-compute-time"]) < 5  # seconds, as a float string
    for name in ("x-total-time", "x-inference-time"):
        assert h[name].isdigit() and 250 <= int(h[name]) < 5000  # integer milliseconds
    assert h["x-validation-time"].isdigit() and h["x-queue-time"].isdigit()
    assert int(h["x-time-per-token"]) == int(h["x-total-time"]) // 4  # 4 generated tokens
    assert (h["x-prompt-tokens"], h["x-generated-tokens"]) == ("3", "4")
    assert h["content-length"] == str(len(resp.content)) and h["content-type"] == "application/json"
    chat_url = f"{double.model_url('h')}/v1/chat/completions"
    chat = httpx.post(chat_url, json={"messages": _user("x")}, timeout=5)
    assert "x-compute-time" not in chat.headers


def test_control_api_over_http_and_call_log(double: EndpointDouble) -> None:
    rules = [{"model": "m1", "match": "x", "text": "one"}, {"match": "x", "text": "two"}]
    script = {"rules": rules, "default": {"text": "fallback"}}
    assert httpx.post(f"{double.url}/_script", json=script, timeout=5).json() == {"ok": True}
    answers = [_client(double, m).text_generation(p) for m, p in [("m1", "x"), ("m2", "x"), ("m1", "y")]]
    assert answers == ["one", "two", "fallback"]  # first matching rule wins, model-specific or generic
    logged = httpx.get(f"{double.url}/_calls", timeout=5).json()
    assert logged["total"] == 3
    assert [(c["model"], c["protocol"], c["prompt"], c["status"]) for c in logged["calls"]] == [
        ("m1", "tgi", "x", 200),
        ("m2", "tgi", "x", 200),
        ("m1", "tgi", "y", 200),
    ]
    assert logged["calls"] == double.calls()
    times = [c["time"] for c in logged["calls"]]
    assert times == sorted(times)
    bad = httpx.post(f"{double.url}/_script", json={"rules": [{"text": "x", "confidence": 1}]}, timeout=5)
    assert bad.status_code == 400 and "confidence" in bad.json()["error"]
    bad_p = httpx.post(f"{double.url}/_script", json={"rules": [{"first": [0.9, 0.5]}]}, timeout=5)
    assert bad_p.status_code == 400
    assert _client(double, "m1").text_generation("x") == "one"  # rejected scripts leave the old one in place
    assert httpx.post(f"{double.url}/_reset", timeout=5).json() == {"ok": True}
    assert double.calls() == [] and _client(double, "m1").text_generation("x") == DEFAULT_TEXT


def test_routing_and_keep_alive(double: EndpointDouble) -> None:
    base = double.model_url("org/name")  # percent-encoded into one path segment
    with httpx.Client(timeout=5) as http:
        for suffix in ("", "/", "/generate"):  # TGI generate: the bare base URL is what hf_hub posts to
            assert http.post(base + suffix, json={"inputs": "hi"}).json() == {"generated_text": DEFAULT_TEXT}
        assert http.get(f"{base}/health").json() == {"status": "ok"}
        assert http.get(f"{base}/info").json()["model_id"] == "org/name"
        misses = [
            http.get(f"{double.url}/nope"),
            http.post(f"{base}/v1/embeddings", json={"input": "x"}),  # body must still be drained
            http.get(f"{base}/generate"),
        ]
        assert [(m.status_code, m.json()["error_type"]) for m in misses] == [(404, "not_found")] * 3
        assert http.post(f"{base}/generate", content=b"{not json").status_code == 400
        replies = [http.post(f"{base}/generate", json={"inputs": str(i)}).status_code for i in range(50)]
        assert replies == [200] * 50  # same keep-alive connection after 404/400 bodies were drained
    assert {c["model"] for c in double.calls()} == {"org/name"}


def test_error_counters_are_thread_safe(double: EndpointDouble) -> None:
    double.script([{"match": "race", "errors": [429, 429, 429]}])
    url = f"{double.model_url('a')}/generate"
    with httpx.Client(timeout=5, limits=httpx.Limits(max_connections=16)) as http:

        def call(_: int) -> int:
            return http.post(url, json={"inputs": "race"}).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(call, range(200)))
    assert statuses.count(429) == 3 and statuses.count(200) == 197  # exactly len(errors), despite the race
    assert len(double.calls()) == 200 and sum(c["status"] == 429 for c in double.calls()) == 3


def test_runs_out_of_process(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": [{"match": "ping", "text": " pong"}]}))
    cmd = [sys.executable, "-m", "tests.support.endpoint", "--port", "0", "--script", str(script)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(20, proc.kill)  # never hang the suite on a missing READY line
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert re.fullmatch(r"READY http://127\.0\.0\.1:\d+", line), line
        url = line.split()[1]
        assert InferenceClient(model=f"{url}/m/x", timeout=5).text_generation("ping") == " pong"
        rules = {"rules": [{"match": "ping", "errors": [429]}]}
        assert httpx.post(f"{url}/_script", json=rules, timeout=5).status_code == 200
        with pytest.raises(TextGenerationError):
            InferenceClient(model=f"{url}/m/x", timeout=5).text_generation("ping")
        calls = httpx.get(f"{url}/_calls", timeout=5).json()["calls"]
        assert [(c["model"], c["status"]) for c in calls] == [("x", 200), ("x", 429)]
    finally:
        watchdog.cancel()
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0 and stderr == ""  # SIGTERM unwinds cleanly, nothing logged per request

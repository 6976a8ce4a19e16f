"""The real backend code (InferenceClient for TGI, urllib3 for OpenAI routes) against the endpoint double."""

from __future__ import annotations

import contextlib
import http.server
import math
import socket
import threading
from collections.abc import Iterator
from typing import Literal

import pytest

from herd.backends.base import GenerationRequest, MissingLogprobsError, PermanentError, Prompt, RetryableError
from herd.backends.registry import make_backend
from herd.cascade.uncertainty import measure
from herd.herdfile.model import ConfigError, ModelConfig

CHAT = Prompt(mode="chat", messages=(("user", "What is the capital of France?"),))
TEXT = Prompt(mode="completion", text="Q: What is the capital of France?\nA:")


def backend(protocol: Literal["tgi", "openai"], url: str, timeout_s: float = 5.0, **extra):  # type: ignore[no-untyped-def]
    return make_backend("m", ModelConfig(protocol=protocol, endpoints=[url], timeout_s=timeout_s, **extra))


def request(prompt: Prompt, k: int = 5) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_new_tokens=8, top_logprobs=k)


@pytest.mark.parametrize(
    ("protocol", "suffix", "prompt"),
    [("tgi", "", TEXT), ("openai", "/v1", CHAT), ("openai", "/v1", TEXT), ("openai", "", CHAT)],
)
def test_every_protocol_gives_the_same_normalized_result(double, protocol, suffix, prompt) -> None:
    double.script([{"match": "France", "text": " Paris is", "first": [0.7, 0.2, 0.05], "rest_p": 0.9}])
    out = backend(protocol, double.model_url("m") + suffix).generate(request(prompt))
    assert out.text == " Paris is"
    assert [t.token for t in out.tokens] == [" Paris", " is"]
    assert math.exp(out.tokens[0].logprob) == pytest.approx(0.7)
    assert len(out.tokens[0].top) == 3
    assert out.generated_tokens == 2 and out.prompt_tokens and out.prompt_tokens > 0
    assert measure(out.tokens).first_token_margin == pytest.approx(0.5)
    assert out.timing.latency_s > 0


def test_tgi_timing_headers_are_kept(double) -> None:
    double.script([{"match": "", "text": "ok", "delay": 0.05}])
    out = backend("tgi", double.model_url("m")).generate(request(TEXT))
    assert out.timing.compute_s is not None and out.timing.compute_s >= 0.05  # seconds
    assert out.timing.inference_s is not None and 0.0 <= out.timing.inference_s < 10  # from milliseconds
    assert out.timing.queue_s is not None and out.timing.queue_s < 10


@pytest.mark.parametrize(
    "protocol,suffix,prompt", [("tgi", "", TEXT), ("openai", "/v1", CHAT), ("openai", "/v1", TEXT)]
)
@pytest.mark.parametrize(
    "status,kind",
    [
        (429, RetryableError),
        (503, RetryableError),
        (500, RetryableError),
        (422, PermanentError),
        (400, PermanentError),
    ],
)
def test_http_errors_map_to_named_exceptions(double, protocol, suffix, prompt, status, kind) -> None:
    double.script([{"match": "", "text": "x", "errors": [status]}])
    with pytest.raises(kind) as info:
        backend(protocol, double.model_url("m") + suffix).generate(request(prompt))
    assert info.value.status == status
    assert not (kind is PermanentError and isinstance(info.value, RetryableError))


def test_timeouts_and_refused_connections_are_retryable(double) -> None:
    double.script([{"match": "", "text": "late", "delay": 1.0}])
    with pytest.raises(RetryableError, match="timed out"):
        backend("tgi", double.model_url("m"), timeout_s=0.2).generate(request(TEXT))
    with pytest.raises(RetryableError, match="timed out"):
        backend("openai", double.model_url("m") + "/v1", timeout_s=0.2).generate(request(CHAT))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(RetryableError, match="cannot reach"):
            backend("openai", f"http://127.0.0.1:{port}/v1").generate(request(TEXT))


@pytest.mark.parametrize(
    "protocol,suffix,prompt", [("tgi", "", TEXT), ("openai", "/v1", CHAT), ("openai", "/v1", TEXT)]
)
def test_a_response_without_logprobs_is_an_error(double, protocol, suffix, prompt) -> None:
    double.script([{"match": "", "text": "x", "logprobs": False}])
    with pytest.raises(MissingLogprobsError):
        backend(protocol, double.model_url("m") + suffix).generate(request(prompt))


def test_replicas_are_used_round_robin(double) -> None:
    double.script([], default={"text": "ok"})
    config = ModelConfig(
        protocol="openai", endpoints=[double.model_url("a") + "/v1", double.model_url("b") + "/v1"]
    )
    multi = make_backend("m", config)
    chosen = [multi.generate(request(CHAT)).endpoint for _ in range(4)]
    assert chosen == [config.endpoints[0], config.endpoints[1]] * 2
    assert [c["model"] for c in double.calls()] == ["a", "b", "a", "b"]


HF_TOKEN = "hf_machine_token_that_must_stay_home"
EVERY_PATH = [("tgi", "", TEXT), ("openai", "/v1", CHAT), ("openai", "/v1", TEXT)]


@pytest.mark.parametrize(("protocol", "suffix", "prompt"), EVERY_PATH)
def test_the_machines_hugging_face_token_is_never_sent(double, monkeypatch, protocol, suffix, prompt) -> None:
    # huggingface_hub reads HF_TOKEN on every call made without a key; a self-hosted endpoint
    # must never receive it.
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    double.script([], default={"text": "ok"})
    backend(protocol, double.model_url("m") + suffix).generate(request(prompt))
    (call,) = double.calls()
    assert HF_TOKEN not in (call["authorization"] or "")


@pytest.mark.parametrize(("protocol", "suffix", "prompt"), EVERY_PATH)
def test_the_models_own_key_is_sent_as_bearer(double, monkeypatch, protocol, suffix, prompt) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("HERD_TEST_ENDPOINT_KEY", "sk-local-vllm")
    double.script([], default={"text": "ok"})
    url = double.model_url("m") + suffix
    backend(protocol, url, api_key_env="HERD_TEST_ENDPOINT_KEY").generate(request(prompt))
    assert [c["authorization"] for c in double.calls()] == ["Bearer sk-local-vllm"]


@pytest.mark.parametrize("protocol", ["tgi", "openai"])
def test_a_missing_key_variable_names_the_model_and_the_variable(monkeypatch, protocol) -> None:
    monkeypatch.delenv("HERD_TEST_ENDPOINT_KEY", raising=False)
    with pytest.raises(
        ConfigError, match=r"models\.m\.api_key_env: environment variable HERD_TEST_ENDPOINT_KEY"
    ):
        backend(protocol, "http://127.0.0.1:9", api_key_env="HERD_TEST_ENDPOINT_KEY")


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/", "http://h:8000/v1/chat/completions"),
        ("http://h:8000", "http://h:8000/v1/chat/completions"),
        ("http://h/m/x", "http://h/m/x/v1/chat/completions"),
        ("http://h/v1/chat/completions", "http://h/v1/chat/completions"),
        ("https://h/v1?api-version=2", "https://h/v1/chat/completions?api-version=2"),
    ],
)
def test_the_chat_url_is_the_one_inference_client_built(base: str, url: str) -> None:
    from herd.backends.openai_compat import chat_url

    assert chat_url(base) == url


# The OpenAI backend's own HTTP client (herd/backends/jsonclient.py): what it kept of the httpx client.


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No proxy in the environment, and huggingface_hub's shared httpx client made afresh before and
    after the test: it reads the proxies once, when made (a worker's environment never changes, a
    test's does)."""
    from huggingface_hub.utils import _http as hf_http

    for name in PROXY_VARIABLES:  # urllib and httpx read both cases
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    hf_http.close_session()
    yield
    hf_http.close_session()


@pytest.mark.parametrize("proxy", ["{url}", "{netloc}"])  # a proxy without a scheme is http:// to httpx
def test_the_environments_proxy_carries_openai_calls(double, monkeypatch, no_proxies, proxy: str) -> None:
    # `model.invalid` resolves nowhere: the answer can only come through the proxy (the double answers
    # absolute-form requests as a forward proxy would pass them on).
    monkeypatch.setenv("HTTP_PROXY", proxy.format(url=double.url, netloc=double.url.split("://")[1]))
    double.script([], default={"text": "via proxy"})
    unreachable = double.model_url("m").replace(double.url, "http://model.invalid:9")
    out = backend("openai", unreachable + "/v1").generate(request(CHAT))
    assert out.text == "via proxy"
    assert [c["model"] for c in double.calls()] == ["m"]


def test_no_proxy_sends_the_call_directly(double, monkeypatch, no_proxies) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8,localhost")  # an address range, as clusters set it
    double.script([], default={"text": "direct"})
    assert backend("openai", double.model_url("m") + "/v1").generate(request(CHAT)).text == "direct"


def test_only_a_named_proxy_sends_openai_calls_through_httpx(monkeypatch, no_proxies) -> None:
    from herd.backends.jsonclient import proxy_configured

    assert not proxy_configured()
    monkeypatch.setenv("no_proxy", "localhost")  # bypass rules alone name no proxy
    assert not proxy_configured()
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    assert proxy_configured()


@contextlib.contextmanager
def answering(status: int, headers: dict[str, str], body: bytes) -> Iterator[str]:
    """A server that answers every POST with `status`, `headers` and `body`; yields its base URL."""

    class Fixed(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("proxied", [False, True])
def test_a_redirect_is_a_permanent_error_naming_where_it_points(
    monkeypatch, no_proxies, proxied: bool
) -> None:
    if proxied:  # the httpx path, bypassing the proxy for this host
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    moved = {"Location": "http://elsewhere:8000/v1/chat/completions"}
    with answering(308, moved, b"") as url, pytest.raises(PermanentError) as info:
        backend("openai", url).generate(request(CHAT))
    assert "HTTP 308" in str(info.value) and "redirected to http://elsewhere:8000/v1" in str(info.value)
    assert not isinstance(info.value, RetryableError) and info.value.status == 308


def test_a_body_that_is_not_json_is_retryable() -> None:
    # A proxy's own HTML page with status 200: nothing the model said is wrong, the next try may work.
    page = b"<html><body>Gateway maintenance</body></html>"
    with answering(200, {"Content-Type": "text/html"}, page) as url, pytest.raises(RetryableError) as info:
        backend("openai", url).generate(request(TEXT))
    assert "unreadable response body" in str(info.value)

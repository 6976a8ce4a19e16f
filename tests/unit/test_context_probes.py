"""Each server's context window and tokenizer, asked in its own wire format (herd/backends/context.py):
the endpoint double speaks as TGI, vLLM, llama.cpp's server or llama-cpp-python's, so the real probe
code reads the real shapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from herd.backends import context
from herd.backends.context import ContextInfo, Window
from herd.herdfile.model import HerdConfig, load_herd
from tests.support.endpoint import EndpointDouble

DOCUMENT = "one two three four five six seven eight nine ten eleven"  # 11 of the double's tokens


@pytest.fixture
def double() -> Iterator[EndpointDouble]:
    with EndpointDouble() as d:
        yield d


def herd(tmp_path: Path, url: str, protocol: str, extra: str = "") -> HerdConfig:
    path = tmp_path / "herd.yaml"
    path.write_text(
        f"""\
models:
  m:
    protocol: {protocol}
    endpoints: {url}
    prompt_mode: completion
    timeout_s: 5
    gpus: {{type: L4, count: 1, usd_per_hour: 1.0}}
{extra}tasks:
  t: {{kind: qa, completion: "Q: {{text}}\\nA:"}}
"""
    )
    return load_herd(path)


@pytest.mark.parametrize(
    ("server", "protocol", "suffix", "window"),
    [
        ("tgi", "tgi", "", Window(3000, 2999, "{root}/info")),
        ("tgi", "openai", "/v1", Window(3000, 2999, "{root}/info")),  # TGI's Messages API
        ("vllm", "openai", "/v1", Window(3000, None, "{root}/v1/models")),
        # Not /v1/models' meta.n_ctx_train (8192): the context the server was started with.
        ("llamacpp", "openai", "/v1", Window(3000, None, "{root}/props")),
        ("llama-cpp-python", "openai", "/v1", None),  # it does not say: the herd file must
    ],
)
def test_each_server_says_its_context_and_counts_tokens_in_its_own_format(
    tmp_path: Path, double: EndpointDouble, server: str, protocol: str, suffix: str, window: Window | None
) -> None:
    double.set_servers({"m": server})
    double.set_contexts({"m": 3000})
    root = double.model_url("m")
    info = ContextInfo(herd(tmp_path, root + suffix, protocol))
    expected = (
        None if window is None else Window(window.total, window.max_input, window.source.format(root=root))
    )
    assert info.window("m") == expected
    count = info.count("m", DOCUMENT)
    assert (count.tokens, count.exact) == (11, True)  # the server's tokenizer, not the chars/3 estimate


def test_a_context_in_the_herd_file_wins_and_the_server_still_counts(
    tmp_path: Path, double: EndpointDouble
) -> None:
    double.set_servers({"m": "llama-cpp-python"})
    info = ContextInfo(herd(tmp_path, double.model_url("m") + "/v1", "openai", "    context_tokens: 512\n"))
    assert info.window("m") == Window(512)
    assert info.count("m", DOCUMENT).exact


def test_a_server_that_says_nothing_leaves_the_estimate(tmp_path: Path) -> None:
    info = ContextInfo(herd(tmp_path, "http://127.0.0.1:9/v1", "openai"))  # nothing listens there
    assert info.window("m") is None
    count = info.count("m", DOCUMENT)
    assert (count.tokens, count.exact) == (context.estimate(DOCUMENT), False) and count.tokens > 11


def test_older_tgi_names_the_input_cap_max_input_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TGI before 2.0 says `max_input_length`; a boolean or zero is no size at all."""
    answers: dict[str, Any] = {
        "/info": {"max_total_tokens": 2048, "max_input_length": 1024, "max_input_tokens": True},
        "/tokenize": [{"id": 1, "text": "a", "start": 0, "stop": 1}],
    }

    def get(config: object, url: str) -> Any:
        return next((v for k, v in answers.items() if url.endswith(k)), None)

    monkeypatch.setattr(context, "_get", get)
    monkeypatch.setattr(context, "_post", get)
    info = ContextInfo(herd(tmp_path, "http://tgi.invalid", "tgi"))
    assert info.window("m") == Window(2048, 1024, "http://tgi.invalid/info")
    assert info.window("m").input_budget(100) == 1024  # type: ignore[union-attr]
    answers["/props"] = {"default_generation_settings": {"n_ctx": 0}, "n_ctx": 4096}
    answers.pop("/info")
    assert ContextInfo(herd(tmp_path, "http://llama.invalid/v1", "openai")).window("m") == Window(
        4096, None, "http://llama.invalid/props"
    )


def test_vllm_tokenize_leaves_out_an_unknown_model_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM answers 404 to a model name it does not serve; without one it uses the model it serves."""
    bodies: list[dict[str, Any]] = []

    def post(config: object, url: str, body: dict[str, Any]) -> Any:
        bodies.append(body)
        return {"count": 3, "max_model_len": 4096, "tokens": [1, 2, 3]}

    monkeypatch.setattr(context, "_get", lambda config, url: {"data": [{"id": "x", "max_model_len": 4096}]})
    monkeypatch.setattr(context, "_post", post)
    info = ContextInfo(herd(tmp_path, "http://vllm.invalid/v1", "openai"))
    assert info.count("m", "a b c").tokens == 3 and bodies == [{"prompt": "a b c"}]

"""OpenAI-compatible servers (vLLM, SGLang, llama.cpp, TGI's Messages API).

Chat prompts go to `/v1/chat/completions`, completion prompts (base models with a few-shot template)
to `/v1/completions`. Both are one POST through the model's own urllib3 pool (herd/backends/jsonclient.py)
and read the JSON body as a plain dict. InferenceClient.chat_completion sent the same request but was
27% of a worker's Python time against an instant endpoint (py-spy in benchmarks/throughput.py, issue
12), much of it around the POST: provider lookup, payload preparation, typed output objects built only
to read four fields back; huggingface_hub's shared httpx client then cost 0.2 ms more per call than
urllib3.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse, urlunparse

from herd.backends import transport
from herd.backends.base import (
    BackendError,
    Generation,
    GenerationRequest,
    MissingLogprobsError,
    PermanentError,
    Timing,
    TokenLogprob,
)
from herd.backends.jsonclient import JsonClient
from herd.backends.logprobs import alternatives, chosen_logprob
from herd.herdfile.model import ModelConfig


class OpenAIBackend:
    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name = name
        self._served_model = config.served_model or name
        self._rotation = transport.EndpointRotation(config.endpoints)
        # Only the model's own key, never the machine's Hugging Face token.
        self._client = JsonClient(
            max_in_flight=config.max_in_flight,
            timeout_s=config.timeout_s,
            headers=transport.auth_headers(transport.api_key(name, config)),
        )
        self._chat_urls = {url: chat_url(url) for url in config.endpoints}

    def generate(self, request: GenerationRequest) -> Generation:
        endpoint = self._rotation.next()
        started = time.perf_counter()
        try:
            if request.prompt.mode == "chat":
                body = self._chat(endpoint, request)
            else:
                body = self._completion(endpoint, request)
        except BackendError:
            raise  # already named (an error status from our own HTTP call): keep its kind and message
        except Exception as exc:  # every failure is mapped to a named error
            raise transport.map_exception(exc, endpoint) from exc
        latency = time.perf_counter() - started
        try:
            return _parse(body, endpoint, latency)
        except PermanentError:
            raise
        except Exception as exc:  # a body of the wrong shape is the server's error, named
            raise transport.malformed(exc, endpoint) from exc

    def _chat(self, endpoint: str, request: GenerationRequest) -> Mapping[str, Any]:
        # A caller's own parameters first (an OpenAI batch request's top_p, seed, response_format...),
        # then what Herd sets: the model, the prompt and the logprobs its decision needs.
        payload = {
            **request.extra,
            "model": self._served_model,
            "messages": request.prompt.as_messages(),
            "max_tokens": request.max_new_tokens,
            "logprobs": True,
            "top_logprobs": request.top_logprobs,
            "temperature": request.temperature,
        }
        return self._post(self._chat_urls[endpoint], endpoint, payload, request)

    def _completion(self, endpoint: str, request: GenerationRequest) -> Mapping[str, Any]:
        url = endpoint + ("/completions" if endpoint.endswith("/v1") else "/v1/completions")
        payload = {
            **request.extra,
            "model": self._served_model,
            "prompt": request.prompt.text,
            "max_tokens": request.max_new_tokens,
            "logprobs": request.top_logprobs,
            "temperature": request.temperature,
        }
        return self._post(url, endpoint, payload, request)

    def _post(
        self, url: str, endpoint: str, payload: dict[str, Any], request: GenerationRequest
    ) -> Mapping[str, Any]:
        if request.stop:  # as InferenceClient did: no `stop` key at all rather than null
            payload["stop"] = list(request.stop)
        payload = {k: v for k, v in payload.items() if v is not None}
        body: Mapping[str, Any] = self._client.post(url, endpoint, payload)
        return body


def chat_url(base_url: str) -> str:
    """The chat completions URL of a model's base URL, as InferenceClient(base_url=...) builds it:
    `/chat/completions` after a path ending in `/v1`, else `/v1/chat/completions`; kept as is when
    it already ends with `/chat/completions`."""
    parsed = urlparse(base_url)
    path = parsed.path.rstrip("/")
    if path.endswith("/chat/completions"):
        return base_url
    path += "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions"
    return urlunparse(parsed._replace(path=path))


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _parse(body: Mapping[str, Any], endpoint: str, latency: float) -> Generation:
    choices = _get(body, "choices") or []
    if not choices:
        raise PermanentError(f"{endpoint} answered without choices", endpoint=endpoint)
    choice = choices[0]
    message = _get(choice, "message")
    text = _get(message, "content") if message is not None else _get(choice, "text")
    tokens = _tokens(_get(choice, "logprobs"), endpoint)
    usage = _get(body, "usage")
    prompt_tokens = _get(usage, "prompt_tokens") if usage is not None else None
    completion_tokens = _get(usage, "completion_tokens") if usage is not None else None
    return Generation(
        text=text or "",
        tokens=tokens,
        prompt_tokens=int(prompt_tokens) if prompt_tokens is not None else None,
        generated_tokens=int(completion_tokens) if completion_tokens is not None else len(tokens),
        finish_reason=_get(choice, "finish_reason"),
        timing=_server_timing(body, latency),
        endpoint=endpoint,
    )


def _tokens(logprobs: Any, endpoint: str) -> tuple[TokenLogprob, ...]:
    if logprobs is None:
        raise MissingLogprobsError(f"{endpoint} answered without logprobs", endpoint=endpoint)
    content = _get(logprobs, "content")
    if content:  # chat shape: [{token, logprob, top_logprobs: [{token, logprob}]}]
        return tuple(
            TokenLogprob(
                token=str(_get(item, "token") or ""),
                logprob=chosen_logprob(_get(item, "logprob"), endpoint),
                top=alternatives(
                    (_get(alt, "token"), _get(alt, "logprob")) for alt in _get(item, "top_logprobs") or []
                ),
            )
            for item in content
        )
    # Legacy completions shape, also what llama-cpp-python returns on its chat route:
    # {tokens: [...], token_logprobs: [...], top_logprobs: [{token: logprob}, ...]}
    texts = _get(logprobs, "tokens") or []
    values = _get(logprobs, "token_logprobs") or []
    tops = _get(logprobs, "top_logprobs") or [None] * len(texts)
    if not texts or len(texts) != len(values):
        raise MissingLogprobsError(f"{endpoint} answered with empty or malformed logprobs", endpoint=endpoint)
    tokens = []
    for text, value, top in zip(texts, values, tops, strict=False):
        alts = alternatives((top or {}).items()) if isinstance(top, Mapping) else ()
        tokens.append(TokenLogprob(token=str(text), logprob=chosen_logprob(value, endpoint), top=alts))
    return tuple(tokens)


def _server_timing(body: Mapping[str, Any], latency: float) -> Timing:
    # vLLM with --enable-per-request-metrics reports `metrics`; llama.cpp's server reports `timings`.
    metrics = _get(body, "metrics")
    if metrics:
        generation_ms = _get(metrics, "generation_time_ms")
        queue_ms = _get(metrics, "queue_time_ms")
        return Timing(
            latency_s=latency,
            queue_s=queue_ms / 1000 if queue_ms is not None else None,
            inference_s=generation_ms / 1000 if generation_ms is not None else None,
        )
    timings = _get(body, "timings")
    if timings:
        prompt_ms = _get(timings, "prompt_ms") or 0.0
        predicted_ms = _get(timings, "predicted_ms") or 0.0
        return Timing(latency_s=latency, inference_s=(prompt_ms + predicted_ms) / 1000)
    return Timing(latency_s=latency)

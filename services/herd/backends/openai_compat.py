"""OpenAI-compatible servers (vLLM, SGLang, llama.cpp, TGI's Messages API).

Chat prompts go to `/v1/chat/completions` through InferenceClient. Completion prompts (base models
with a few-shot template) go to `/v1/completions`, which InferenceClient has no method for; that
call uses huggingface_hub's shared HTTP client directly, with the same timeout and error mapping.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from huggingface_hub import InferenceClient

from herd.backends import transport
from herd.backends.base import (
    BackendError,
    Generation,
    GenerationRequest,
    MissingLogprobsError,
    PermanentError,
    Timing,
)
from herd.backends.logprobs import alternatives, chosen_logprob
from herd.cascade.uncertainty import TokenLogprob
from herd.herdfile.model import ModelConfig


class OpenAIBackend:
    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name = name
        self._served_model = config.served_model or name
        self._timeout = config.timeout_s
        self._rotation = transport.EndpointRotation(config.endpoints)
        key = transport.api_key(name, config)
        self._headers = transport.auth_headers(key)  # the raw /v1/completions call
        # `base_url` gets `/chat/completions` appended (or `/v1/chat/completions` if it lacks /v1).
        # Always a key: without one, InferenceClient would send the machine's Hugging Face token.
        self._clients = {
            url: InferenceClient(
                base_url=url, timeout=config.timeout_s, api_key=key or transport.PLACEHOLDER_KEY
            )
            for url in config.endpoints
        }

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
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to a named error
            raise transport.map_exception(exc, endpoint) from exc
        latency = time.perf_counter() - started
        try:
            return _parse(body, endpoint, latency)
        except PermanentError:
            raise
        except Exception as exc:  # noqa: BLE001 - a body of the wrong shape is the server's error, named
            raise transport.malformed(exc, endpoint) from exc

    def _chat(self, endpoint: str, request: GenerationRequest) -> Mapping[str, Any]:
        out = self._clients[endpoint].chat_completion(
            request.prompt.as_messages(),
            model=self._served_model,
            max_tokens=request.max_new_tokens,
            logprobs=True,
            top_logprobs=request.top_logprobs,
            temperature=request.temperature,
            stop=list(request.stop) or None,
        )
        # ChatCompletionOutput is also a dict holding the raw fields (extra ones included).
        return out

    def _completion(self, endpoint: str, request: GenerationRequest) -> Mapping[str, Any]:
        url = endpoint + ("/completions" if endpoint.endswith("/v1") else "/v1/completions")
        payload = {
            "model": self._served_model,
            "prompt": request.prompt.text,
            "max_tokens": request.max_new_tokens,
            "logprobs": request.top_logprobs,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
        }
        response = transport.session().post(url, json=payload, headers=self._headers, timeout=self._timeout)
        if response.status_code >= 400:
            raise transport.from_status(response.status_code, response.text[:300], endpoint, response.headers)
        return response.json()


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

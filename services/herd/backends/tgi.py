"""TGI's native `/generate` with `details=True` and `top_n_tokens`, through InferenceClient."""

from __future__ import annotations

import time
from typing import Any

from huggingface_hub import InferenceClient

from herd.backends import transport
from herd.backends.base import (
    Generation,
    GenerationRequest,
    MissingLogprobsError,
    PermanentError,
    Timing,
    TokenLogprob,
)
from herd.backends.logprobs import alternatives, chosen_logprob
from herd.herdfile.model import ModelConfig

# The OpenAI request parameters /generate takes under the same name (an OpenAI batch request's
# top_p, seed...: herd/cascade/requests.py refuses any other for a TGI model).
TGI_PARAMS = frozenset({"top_p", "seed", "frequency_penalty", "repetition_penalty", "top_k"})


class TgiBackend:
    def __init__(self, name: str, config: ModelConfig) -> None:
        transport.install_header_capture()
        self.name = name
        self._rotation = transport.EndpointRotation(config.endpoints)
        # A URL given as `model` is POSTed to as is (TGI's `/` route, same as `/generate`).
        # Always a timeout: InferenceClient waits forever by default. Always a key: without one,
        # InferenceClient would send the machine's Hugging Face token to this endpoint.
        key = transport.api_key(name, config) or transport.PLACEHOLDER_KEY
        self._clients = {
            url: InferenceClient(model=url, timeout=config.timeout_s, api_key=key) for url in config.endpoints
        }

    def generate(self, request: GenerationRequest) -> Generation:
        endpoint = self._rotation.next()
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": request.temperature}
            if request.temperature > 0
            else {"do_sample": False}  # greedy: TGI's logprobs are taken after the sampling warpers
        ) | request.extra
        # A caller's own parameters (an OpenAI batch request's top_p, seed...); herd/cascade/requests.py
        # lets through only TGI_PARAMS.
        unknown = sorted(set(request.extra) - TGI_PARAMS)
        if unknown:
            raise PermanentError(f"TGI's /generate takes no {', '.join(unknown)}", endpoint=endpoint)
        transport.clear_headers()
        started = time.perf_counter()
        try:
            out = self._clients[endpoint].text_generation(
                request.prompt.text,
                details=True,
                top_n_tokens=request.top_logprobs,
                max_new_tokens=request.max_new_tokens,
                stop=list(request.stop),
                return_full_text=False,
                **sampling,
            )
        except Exception as exc:  # every failure is mapped to a named error
            raise transport.map_exception(exc, endpoint) from exc
        latency = time.perf_counter() - started
        try:
            return _generation(out, endpoint, latency)
        except PermanentError:
            raise
        except Exception as exc:  # a body of the wrong shape is the server's error, named
            raise transport.malformed(exc, endpoint) from exc


def _generation(out: Any, endpoint: str, latency: float) -> Generation:
    """The normalized result of a /generate response; PermanentError when it cannot be judged."""
    headers = transport.last_headers()
    if not isinstance(out.generated_text, str):
        # No answer in the body at all: the server's error, named here rather than found later as
        # an AttributeError while the pipeline cleans the text.
        raise PermanentError(f"malformed response from {endpoint}: no generated_text", endpoint=endpoint)
    details = out.details
    if details is None or not details.tokens:
        # InferenceClient silently drops `details` when the server is not TGI-compatible.
        raise MissingLogprobsError(f"{endpoint} answered without token details", endpoint=endpoint)
    top_tokens = details.top_tokens
    if not top_tokens:
        raise MissingLogprobsError(f"{endpoint} answered without top_tokens", endpoint=endpoint)
    tokens = tuple(_token(tok, alts, endpoint) for tok, alts in zip(details.tokens, top_tokens, strict=False))
    prompt_tokens = transport.header_float(headers, "x-prompt-tokens")
    return Generation(
        text=out.generated_text,
        tokens=tokens,
        prompt_tokens=int(prompt_tokens) if prompt_tokens is not None else None,
        generated_tokens=int(details.generated_tokens),
        finish_reason=str(details.finish_reason),
        timing=Timing(
            latency_s=latency,
            queue_s=transport.header_float(headers, "x-queue-time", 1e-3),  # milliseconds
            inference_s=transport.header_float(headers, "x-inference-time", 1e-3),  # milliseconds
            compute_s=transport.header_float(headers, "x-compute-time"),  # seconds
        ),
        endpoint=endpoint,
    )


def _field(obj: Any, key: str) -> Any:
    # huggingface_hub 2.4 parses `details.tokens` into objects but leaves `top_tokens` as dicts.
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _token(token: Any, top: list[Any], endpoint: str) -> TokenLogprob:
    return TokenLogprob(
        token=str(_field(token, "text") or ""),
        logprob=chosen_logprob(_field(token, "logprob"), endpoint),
        top=alternatives((_field(alt, "text"), _field(alt, "logprob")) for alt in top or []),
        special=bool(_field(token, "special")),
    )

"""Each model's context window and token counts, for the long-document policies (docs/documents.md).

The limit: `context_tokens` in the herd file, else asked of the model's first endpoint the first time
a task with a `long_documents` policy needs it, trying in turn (`root` is the endpoint without `/v1`):
- TGI `GET {root}/info`: `max_total_tokens`, with `max_input_tokens` (TGI 2+; `max_input_length`
  before) as a second cap on the prompt;
- vLLM `GET {root}/v1/models`: `data[].max_model_len`;
- llama.cpp's server `GET {root}/props`: `default_generation_settings.n_ctx` (every build since
  2024; a top-level `n_ctx` is taken too). Its `/v1/models` has only `meta.n_ctx_train`, the
  training context, which is not what the server was started with, so it is not used;
- llama-cpp-python's server says nothing (its `/v1/models` lists ids only, it has no `/props`): the
  context is unknown unless the herd file gives it.
None of them answering leaves the limit unknown: the policy then does nothing and the server's own
error decides, as without a policy. The answer, found or not, is cached for the worker process's
life. The endpoints are asked also when the herd file gives the limit, once, to learn which server
this is and so where its tokenizer is.

Token counts: the server's own tokenizer where it has one, by its wire format:
- TGI `POST {root}/tokenize` `{"inputs": text}` -> a list of `{id, text, start, stop}`;
- vLLM `POST {root}/tokenize` `{"model", "prompt"}` -> `{"count", "max_model_len", "tokens"}`;
- llama.cpp `POST {root}/tokenize` `{"content": text}` -> `{"tokens": [...]}`;
- llama-cpp-python `POST {root}/extras/tokenize/count` `{"input": text}` -> `{"count"}`;
else an estimate of one token per `FALLBACK_CHARS_PER_TOKEN` characters. English text averages
about four characters per token with today's vocabularies, so three over-counts by about a third:
a document estimated to fit does fit, at the price of truncating or chunking a little earlier than
needed. A server without a tokenizer is remembered, so it is asked once per worker process.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

from herd.backends import transport
from herd.herdfile.model import HerdConfig, ModelConfig
from herd.redact import mask_url

log = logging.getLogger(__name__)

FALLBACK_CHARS_PER_TOKEN = 3.0
PROBE_TIMEOUT_S = 5.0  # a metadata call; the model's own timeout is for generations


@dataclass(frozen=True)
class Window:
    """A model's context in tokens: `total` for prompt plus generated tokens; `max_input` a second cap
    on the prompt alone where the server has one (TGI). `source`: where the numbers came from."""

    total: int
    max_input: int | None = None
    source: str = "herd file"

    def input_budget(self, max_new_tokens: int) -> int:
        """Prompt tokens a request generating up to `max_new_tokens` may carry."""
        budget = self.total - max_new_tokens
        return min(budget, self.max_input) if self.max_input is not None else budget


@dataclass(frozen=True)
class Count:
    tokens: int
    exact: bool  # False: the chars/3 estimate


def estimate(text: str) -> int:
    """Tokens in `text` by the conservative fallback rule (see the module docstring)."""
    return math.ceil(len(text) / FALLBACK_CHARS_PER_TOKEN)


class ContextInfo:
    """Per worker process: each model's `Window` and a token counter, asked of its server once."""

    def __init__(self, herd: HerdConfig) -> None:
        self.herd = herd
        self._lock = threading.Lock()
        self._windows: dict[str, Window | None] = {}
        # model -> "tgi" | "vllm" | "llamacpp" | "llama-cpp-python" | None (no tokenizer known)
        self._flavour: dict[str, str | None] = {}
        self._no_tokenizer: set[str] = set()

    def window(self, model: str) -> Window | None:
        """The model's context window; None when neither the herd file nor its server says."""
        with self._lock:
            if model in self._windows:
                return self._windows[model]
        config = self.herd.models[model]
        found, flavour = self._probe(config)
        if config.context_tokens is not None:  # the herd file wins; the probe said where to count
            found = Window(config.context_tokens)
        with self._lock:
            self._windows[model] = found
            self._flavour[model] = flavour
        if found is not None:
            log.info("model %s: context %d tokens (%s)", model, found.total, found.source)
        else:
            log.warning("model %s: context unknown (set `context_tokens` in the herd file)", model)
        return found

    def count(self, model: str, text: str) -> Count:
        """Tokens in `text` for `model`: its server's tokenizer, else the estimate."""
        self.window(model)  # learns which server this is
        config = self.herd.models[model]
        flavour = self._flavour.get(model)
        if flavour is None and config.protocol == "tgi":
            flavour = "tgi"
        if model not in self._no_tokenizer and flavour is not None:
            counted = self._tokenize(config, flavour, text)
            if counted is not None:
                return Count(counted, exact=True)
            with self._lock:
                self._no_tokenizer.add(model)
        return Count(estimate(text), exact=False)

    def _probe(self, config: ModelConfig) -> tuple[Window | None, str | None]:
        root = _root(config.endpoints[0])
        info = _get(config, f"{root}/info")
        total = _tokens(info.get("max_total_tokens")) if isinstance(info, dict) else None
        if isinstance(info, dict) and total is not None:
            max_input = _tokens(info.get("max_input_tokens")) or _tokens(info.get("max_input_length"))
            return Window(total, max_input, f"{mask_url(root)}/info"), "tgi"
        models = _get(config, f"{root}/v1/models")
        data = models.get("data") if isinstance(models, dict) else None
        for entry in data if isinstance(data, list) else []:
            max_model_len = _tokens(entry.get("max_model_len")) if isinstance(entry, dict) else None
            if max_model_len is not None:
                return Window(max_model_len, None, f"{mask_url(root)}/v1/models"), "vllm"
        props = _get(config, f"{root}/props")
        if isinstance(props, dict):
            settings = props.get("default_generation_settings")
            n_ctx = _tokens(settings.get("n_ctx")) if isinstance(settings, dict) else None
            n_ctx = n_ctx or _tokens(props.get("n_ctx"))
            if n_ctx is not None:
                return Window(n_ctx, None, f"{mask_url(root)}/props"), "llamacpp"
            return None, "llamacpp"  # a llama.cpp server all the same: its tokenizer counts
        if isinstance(data, list):  # an OpenAI-compatible server that does not say its context
            return None, "llama-cpp-python"
        return None, None

    def _tokenize(self, config: ModelConfig, flavour: str, text: str) -> int | None:
        root = _root(config.endpoints[0])
        if flavour == "tgi":
            url, body = f"{root}/tokenize", {"inputs": text}
        elif flavour == "vllm":
            # Without a served name the field is left out: vLLM then uses the one model it serves.
            served = {"model": config.served_model} if config.served_model else {}
            url, body = f"{root}/tokenize", {**served, "prompt": text}
        elif flavour == "llamacpp":
            url, body = f"{root}/tokenize", {"content": text}
        else:
            url, body = f"{root}/extras/tokenize/count", {"input": text}
        answer = _post(config, url, body)
        if isinstance(answer, list):  # TGI
            return len(answer)
        if isinstance(answer, dict):
            count = answer.get("count")  # vLLM, llama-cpp-python
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                return count
            if isinstance(answer.get("tokens"), list):  # llama.cpp
                return len(answer["tokens"])
        return None


def _tokens(value: Any) -> int | None:
    """`value` as a context size: an int above zero, else None (JSON's true is an int to Python)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _root(endpoint: str) -> str:
    return endpoint[: -len("/v1")] if endpoint.endswith("/v1") else endpoint


def _headers(config: ModelConfig) -> dict[str, str]:
    # The worker checked at start that the key's variable is set (herd/backends/transport.py).
    return transport.auth_headers(transport.api_key(config.served_model or "model", config))


def _get(config: ModelConfig, url: str) -> Any:
    try:
        response = transport.session().get(url, headers=_headers(config), timeout=PROBE_TIMEOUT_S)
        return response.json() if response.status_code == 200 else None
    except Exception:  # noqa: BLE001 - any failure means "this server does not say"
        return None


def _post(config: ModelConfig, url: str, body: dict[str, Any]) -> Any:
    try:
        response = transport.session().post(
            url, json=body, headers=_headers(config), timeout=config.timeout_s
        )
        return response.json() if response.status_code == 200 else None
    except Exception:  # noqa: BLE001 - any failure means "no tokenizer here": the estimate is used
        return None

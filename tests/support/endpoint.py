"""Scriptable inference-endpoint double: a local HTTP server speaking the TGI and OpenAI wire formats.

Tests and benchmarks script which prompts get confident answers and which do not, then point the *real*
client code (huggingface_hub ``InferenceClient``, raw httpx) at it.

URLs to configure (model names are one path segment; ``model_url()`` percent-encodes anything else):

* Model base URL ``http://127.0.0.1:PORT/m/<model>``: give exactly this to ``InferenceClient(model=...)`` or
  ``InferenceClient(base_url=...)``. hf_hub 2.4 POSTs ``text_generation`` to the URL as given, so
  ``POST /m/<model>`` and ``/m/<model>/`` are TGI generate (TGI's ``/`` route), and it appends
  ``/v1/chat/completions`` for ``chat_completion``.
* TGI: ``POST /m/<model>/generate`` (or the base URL itself). Non-streaming only.
* OpenAI chat: ``POST /m/<model>/v1/chat/completions`` (the OpenAI SDK wants ``base_url=<model url>/v1``).
* OpenAI legacy completions: ``POST /m/<model>/v1/completions``. As in vLLM, ``max_tokens`` defaults to 16.
* ``GET /m/<model>/health``, ``GET /m/<model>/info``; ``POST /m/<model>/tokenize`` ``{"inputs": text}``
  (TGI's shape: one token per whitespace-separated word, the same stand-in as prompt tokens).
* Metadata and tokenizer as each server speaks them: ``set_servers({model: kind})`` (or ``"servers"``
  in a ``/_script`` body) makes ``model`` answer like ``tgi`` (the default: ``/info``, ``/tokenize``
  ``{"inputs"}`` -> a list of tokens), ``vllm`` (``/v1/models`` ``data[].max_model_len``,
  ``/tokenize`` ``{"prompt"}`` -> ``{"count", "max_model_len", "tokens"}``), ``llamacpp`` (llama.cpp's
  server: ``/props`` ``default_generation_settings.n_ctx``, ``/v1/models`` with ``meta.n_ctx_train``
  only, ``/tokenize`` ``{"content"}`` -> ``{"tokens"}``) or ``llama-cpp-python`` (``/v1/models`` ids
  only, ``/extras/tokenize/count`` ``{"input"}`` -> ``{"count"}``); the others' routes are 404.
* Context windows: ``set_contexts({model: tokens})`` (or ``"contexts"`` in a ``/_script`` body) makes
  ``/info`` report them and refuses a request whose prompt tokens plus ``max_new_tokens`` exceed them, as
  vLLM/TGI do (400 on OpenAI routes, 422 on TGI's: "maximum context length is N tokens, ...").
* Control: ``POST /_script`` ``{"rules": [...], "default": {...}}``, ``POST /_reset``,
  ``GET /_calls`` -> ``{"calls": [...], "total": n}``, ``GET /_health``. Each call records the
  ``Authorization`` header it carried (or None), so tests can check which credentials were sent.

Stand-ins: prompt tokens = whitespace-separated words of the prompt text (chat: message contents joined
with a newline) unless a rule sets ``prompt_tokens``. Answer tokens = ``re.findall(r"\\s*\\S+|\\s+", text)``,
which concatenate back to the text; ids are ``crc32(token) % 50000`` (stable across processes). Token 0 is
chosen with probability ``first[0]`` and alternatives ``<alt1>``, ``<alt2>``... get ``first[1:]``; later
tokens get ``rest_p`` and ``<alt1>`` gets ``(1 - rest_p) / 2``. Stop sequences: TGI keeps the stop text in
the output (as TGI does), the OpenAI routes cut it off. Validation (e.g. ``top_n_tokens`` > 5 -> 422) runs
before rule errors/delay, so a rejected request never consumes a scripted error. A rule's ``quirk`` sends a
malformed answer real servers produce (``QUIRKS``: null or NaN logprob of the first token, null content,
alternatives sharing the first token's text).

Out of process: ``python -m tests.support.endpoint --port N [--script FILE.json]`` prints
``READY http://127.0.0.1:N`` once listening; the script file uses the ``/_script`` body format.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import signal
import socketserver
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union
from urllib.parse import quote, unquote, urlsplit

MAX_TOP_N_TOKENS = 5  # TGI default `--max-top-n-tokens`
MAX_STOP_SEQUENCES = 4  # TGI default `--max-stop-sequences`
MAX_LOGPROBS = 20  # vLLM default `--max-logprobs` (also OpenAI's top_logprobs limit)
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI / vLLM default for the legacy completions API
DEFAULT_TEXT = "This is a scripted answer."
_TOKEN_RE = re.compile(r"\s*\S+|\s+")  # the trailing-whitespace branch keeps "".join(tokens) == text
_ERROR_TYPES = {400: "validation", 422: "validation", 429: "overloaded"}  # other 5xx -> "generation"
_ERROR_MESSAGES = {"validation": "Input validation error: scripted", "overloaded": "Model is overloaded"}

Reply = tuple[int, dict[str, Any], dict[str, str]]  # status, JSON body, extra headers
RuleLike = Union["Rule", Mapping[str, Any]]  # a Rule or its JSON form


class _Invalid(Exception):
    """A request the real server rejects before queueing it (422 on TGI routes, 400 on OpenAI routes)."""


def _token_id(text: str) -> int:
    return zlib.crc32(text.encode()) % 50000


@dataclass(frozen=True)
class _Tok:
    text: str
    id: int
    logprob: float
    top: tuple[tuple[str, int, float], ...]  # (text, id, logprob) candidates incl. the chosen one, best first


def _tokenize(text: str, first: tuple[float, ...], rest_p: float) -> tuple[_Tok, ...]:
    out: list[_Tok] = []
    for pos, piece in enumerate(_TOKEN_RE.findall(text)):
        if pos == 0:
            cands = [(piece, first[0])] + [(f"<alt{j}>", p) for j, p in enumerate(first[1:], 1)]
        else:
            cands = [(piece, rest_p)] + ([("<alt1>", (1 - rest_p) / 2)] if rest_p < 1 else [])
        # Stable sort: on ties the chosen token stays first.
        top = tuple(sorted(((t, _token_id(t), math.log(p)) for t, p in cands), key=lambda c: -c[2]))
        out.append(_Tok(piece, _token_id(piece), math.log(cands[0][1]), top))
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    """One scripted behaviour; the first rule whose model and substring match a request wins."""

    model: str | None = None  # None = any model
    match: str = ""  # substring of the prompt text; "" matches everything
    text: str = DEFAULT_TEXT
    first: tuple[float, ...] = (0.99, 0.005)
    rest_p: float = 0.99
    errors: tuple[int, ...] = ()  # statuses for the first len(errors) calls per (model, prompt)
    retry_after: str | None = None  # a Retry-After header sent with each scripted error, as given
    delay: float = 0.0
    logprobs: bool = True  # False: answer without logprobs even when asked
    prompt_tokens: int | None = None
    quirk: str | None = None  # a malformed answer real servers send, one of QUIRKS
    toks: tuple[_Tok, ...] = field(init=False, repr=False, compare=False)  # precomputed: no per-request work

    def __post_init__(self) -> None:
        first = tuple(float(p) for p in self.first)
        errors = tuple(int(s) for s in self.errors)
        # Probabilities must be > 0: ln(0) = -inf is not valid JSON.
        if not first or any(not 0 < p <= 1 for p in first) or sum(first) > 1 + 1e-9:
            raise ValueError(f"first must be non-empty probabilities in (0, 1] summing to <= 1: {first}")
        if not 0 < self.rest_p <= 1:
            raise ValueError(f"rest_p must be in (0, 1]: {self.rest_p}")
        if any(not 400 <= s <= 599 for s in errors) or self.delay < 0:
            raise ValueError("errors must be HTTP statuses 400..599 and delay >= 0")
        if not isinstance(self.text, str) or not isinstance(self.match, str):
            raise ValueError("text and match must be strings")
        if self.quirk is not None and self.quirk not in QUIRKS:
            raise ValueError(f"quirk must be one of {sorted(QUIRKS)}: {self.quirk!r}")
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "errors", errors)
        object.__setattr__(self, "toks", _tokenize(self.text, first, float(self.rest_p)))

    @classmethod
    def coerce(cls, obj: RuleLike) -> Rule:
        if isinstance(obj, Rule):
            return obj
        unknown = set(obj) - {f.name for f in fields(cls) if f.init}
        if unknown:  # a typo in a script should fail loudly, not silently use defaults
            raise ValueError(f"unknown rule keys: {sorted(unknown)}")
        return cls(**obj)


@dataclass
class _Opts:
    limit: int | None = None  # max new tokens; None = the whole scripted answer
    stops: list[str] = field(default_factory=list)
    logprobs: bool = False  # caller asked for per-token logprobs (TGI: details)
    k: int = 0  # top alternatives per token


@dataclass(frozen=True)
class _Call:
    """An admitted request, handed to a protocol renderer."""

    model: str
    prompt: str
    rule: Rule
    opts: _Opts
    prompt_tokens: int
    started: float  # perf_counter() at arrival, for TGI's timing headers


def _int(params: Mapping[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise _Invalid(f"`{key}` must be an integer")
    return value


def _str(value: Any, what: str) -> str:
    if isinstance(value, list) and len(value) == 1:  # legacy completions accept a one-prompt batch
        value = value[0]
    if not isinstance(value, str):
        raise _Invalid(f"`{what}` must be a string")
    return value


def _stops(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _Invalid("`stop` must be a string or a list of strings")
    return [s for s in stops if s]


def _tgi_opts(req: Mapping[str, Any]) -> _Opts:
    params = req.get("parameters") or {}
    if not isinstance(params, dict) or req.get("stream") or params.get("stream"):
        raise _Invalid("`parameters` must be an object; streaming is not supported by the double")
    top_n = _int(params, "top_n_tokens") or 0
    if not 0 <= top_n <= MAX_TOP_N_TOKENS:  # same message as TGI's ValidationError::TopNTokens
        raise _Invalid(f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {top_n}")
    limit = _int(params, "max_new_tokens")
    if limit is not None and limit <= 0:
        raise _Invalid("`max_new_tokens` must be strictly positive")
    stops = _stops(params.get("stop"))
    if len(stops) > MAX_STOP_SEQUENCES:
        raise _Invalid(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stops)}")
    details = params.get("details") is True  # serde default: false
    return _Opts(limit, stops, details, top_n if details else 0)


def _chat_prompt(req: Mapping[str, Any]) -> str:
    messages = req.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _Invalid("`messages` must be a list of objects")
    texts = []
    for content in (m.get("content") for m in messages):
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        texts.append(content if isinstance(content, str) else "")
    return "\n".join(texts)


def _openai_opts(req: Mapping[str, Any], limit: int | None, k: int | None) -> _Opts:
    if req.get("stream"):
        raise _Invalid("streaming is not supported by the endpoint double")
    if k is not None and not 0 <= k <= MAX_LOGPROBS:
        raise _Invalid(f"logprobs must be between 0 and {MAX_LOGPROBS}, got {k}")
    if limit is not None and limit < 0:
        raise _Invalid("`max_tokens` must be >= 0")
    return _Opts(limit, _stops(req.get("stop")), k is not None, k or 0)


def _chat_opts(req: Mapping[str, Any]) -> _Opts:
    limit = _int(req, "max_completion_tokens")
    limit = _int(req, "max_tokens") if limit is None else limit
    return _openai_opts(req, limit, (_int(req, "top_logprobs") or 0) if req.get("logprobs") is True else None)


def _completions_opts(req: Mapping[str, Any]) -> _Opts:
    limit = _int(req, "max_tokens")
    limit = COMPLETIONS_DEFAULT_MAX_TOKENS if limit is None else limit
    return _openai_opts(req, limit, _int(req, "logprobs"))


def _generate(rule: Rule, opts: _Opts) -> tuple[tuple[_Tok, ...], str, str, int]:
    """Play the scripted answer: (tokens, TGI text, finish "length"|"eos"|"stop", OpenAI cut index)."""
    toks = rule.toks if opts.limit is None else rule.toks[: opts.limit]
    finish = "length" if len(toks) < len(rule.toks) else "eos"
    if opts.stops:
        acc = ""
        for i, tok in enumerate(toks):
            acc += tok.text
            hits = [acc.find(s) for s in opts.stops if s in acc]
            if hits:
                return toks[: i + 1], acc, "stop", min(hits)
    text = rule.text if len(toks) == len(rule.toks) else "".join(t.text for t in toks)
    return toks, text, finish, len(text)


def _openai_view(rule: Rule, opts: _Opts) -> tuple[tuple[_Tok, ...], str, str]:
    """OpenAI servers drop the stop string (and tokens reaching into it) from the output."""
    toks, text, finish, cut = _generate(rule, opts)
    ends = itertools.accumulate(len(t.text) for t in toks)
    kept = tuple(t for t, end in zip(toks, ends, strict=True) if end <= cut)
    return kept, text[:cut], ("length" if finish == "length" else "stop")


def _error(status: int, message: str | None = None) -> Reply:
    kind = _ERROR_TYPES.get(status, "generation" if status >= 500 else "unknown")
    text = message or _ERROR_MESSAGES.get(kind, f"Request failed during generation: scripted {status}")
    return status, {"error": text, "error_type": kind}, {}


def _tgi_token(text: str, token_id: int, logprob: float) -> dict[str, Any]:
    return {"id": token_id, "text": text, "logprob": logprob, "special": False}


def _chat_token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


class _Core:
    """All mutable state (script, error counters, call log), behind one lock; HTTP and in-process share it."""

    def __init__(self, max_calls: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._rules: tuple[Rule, ...] = ()
        self._default = Rule()
        self._seen: dict[tuple[int, str, str], int] = {}  # (rule index, model, prompt) -> errors served
        self._calls: deque[dict[str, Any]] = deque(maxlen=max_calls)  # bounded for long benchmarks
        self._total = 0  # counts every call, even those the bounded log dropped
        self._ids = itertools.count(1)
        self.contexts: dict[str, int] = {}  # model -> context window in tokens (unset: unlimited)
        self.servers: dict[str, str] = {}  # model -> SERVERS kind of its metadata routes (unset: tgi)

    def set_script(self, rules: Iterable[RuleLike], default: RuleLike | None) -> None:
        parsed = tuple(Rule.coerce(r) for r in rules)  # validate everything before swapping
        fallback = Rule.coerce(default) if default is not None else Rule()
        with self._lock:
            self._rules, self._default = parsed, fallback
            self._seen.clear()  # counters are keyed by rule index, which the new script redefines

    def reset(self) -> None:
        with self._lock:
            self._rules, self._default, self._total = (), Rule(), 0
            self._seen.clear()
            self.contexts = {}
            self.servers = {}
            self._calls.clear()

    def calls(self) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            return [dict(c) for c in self._calls], self._total

    def _record(
        self,
        model: str,
        protocol: str,
        prompt: str,
        status: int,
        auth: str | None,
        params: dict[str, Any] | None = None,
    ) -> None:
        # Caller holds the lock. Logged on arrival, so in-flight (delayed) calls are already visible.
        self._calls.append(
            {
                "model": model,
                "protocol": protocol,
                "prompt": prompt,
                "status": status,
                "time": time.time(),
                "authorization": auth,
                "params": params or {},  # the request's other fields (TGI: its `parameters`)
            }
        )
        self._total += 1

    def _admit(
        self, model: str, protocol: str, prompt: str, auth: str | None, params: dict[str, Any]
    ) -> tuple[Rule, int]:
        with self._lock:
            rules = enumerate(self._rules)
            hits = ((i, r) for i, r in rules if r.model in (None, model) and r.match in prompt)
            idx, rule = next(hits, (-1, self._default))
            status = 200
            if rule.errors:
                seen = self._seen.get((idx, model, prompt), 0)
                if seen < len(rule.errors):
                    status, self._seen[(idx, model, prompt)] = rule.errors[seen], seen + 1
            self._record(model, protocol, prompt, status, auth, params)
        return rule, status

    def serve(self, model: str, protocol: str, req: Any, auth: str | None = None) -> Reply:
        started = time.perf_counter()
        prompt_of, opts_of, render = _PROTOCOLS[protocol]
        prompt = ""
        try:
            if not isinstance(req, dict):
                raise _Invalid("request body must be a JSON object")
            prompt = prompt_of(req)
            opts = opts_of(req)
        except _Invalid as exc:
            status = 422 if protocol == "tgi" else 400
            with self._lock:
                self._record(model, protocol, prompt, status, auth)
            return _error(status, str(exc))
        context = self.contexts.get(model)
        if context is not None:
            words = len(prompt.split())
            requested = words + (opts.limit or 0)
            if requested > context:
                with self._lock:
                    self._record(model, protocol, prompt, 422 if protocol == "tgi" else 400, auth)
                message = (
                    f"This model's maximum context length is {context} tokens, however you requested "
                    f"{requested} tokens ({words} in the messages, {opts.limit or 0} in the completion)."
                )
                return _error(422 if protocol == "tgi" else 400, message)
        params = (
            dict(req.get("parameters") or {})
            if protocol == "tgi"
            else {k: v for k, v in req.items() if k not in ("messages", "prompt")}
        )
        rule, status = self._admit(model, protocol, prompt, auth, params)
        if rule.delay:
            time.sleep(rule.delay)  # outside the lock: other requests keep flowing
        if status != 200:
            code, body, headers = _error(status)
            return code, body, {**headers, "Retry-After": rule.retry_after} if rule.retry_after else headers
        prompt_tokens = rule.prompt_tokens if rule.prompt_tokens is not None else len(prompt.split())
        reply = render(self, _Call(model, prompt, rule, opts, prompt_tokens, started))
        if rule.quirk is not None:
            QUIRKS[rule.quirk](protocol, reply[1])
        return reply

    def _tgi(self, call: _Call) -> Reply:
        rule, opts = call.rule, call.opts
        toks, text, finish, _ = _generate(rule, opts)
        body: dict[str, Any] = {"generated_text": text}
        if opts.logprobs and rule.logprobs:  # a `logprobs: false` rule acts like a server ignoring `details`
            details: dict[str, Any] = {
                "finish_reason": {"length": "length", "eos": "eos_token", "stop": "stop_sequence"}[finish],
                "generated_tokens": len(toks),
                "seed": None,
                "prefill": [],
                "tokens": [_tgi_token(t.text, t.id, t.logprob) for t in toks],
            }
            if opts.k:
                details["top_tokens"] = [[_tgi_token(*alt) for alt in t.top[: opts.k]] for t in toks]
            body["details"] = details
        secs = time.perf_counter() - call.started
        ms, n = str(int(secs * 1000)), len(toks)
        headers = {  # as TGI's non-streaming /generate: x-compute-time in seconds, the other times in ms
            "x-compute-type": "cpu",
            "x-compute-time": f"{secs:.6f}",
            "x-total-time": ms,
            "x-compute-characters": str(len(call.prompt)),
            "x-validation-time": "0",
            "x-queue-time": "0",
            "x-inference-time": ms,
            "x-time-per-token": str(int(secs * 1000 / max(n, 1))),
            "x-prompt-tokens": str(call.prompt_tokens),
            "x-generated-tokens": str(n),
        }
        return 200, body, headers

    def _chat(self, call: _Call) -> Reply:
        toks, text, finish = _openai_view(call.rule, call.opts)
        logprobs = None
        if call.opts.logprobs and call.rule.logprobs:
            top = [[_chat_token(a, lp) for a, _, lp in t.top[: call.opts.k]] for t in toks]
            logprobs = {
                "content": [
                    _chat_token(t.text, t.logprob) | {"top_logprobs": alts}
                    for t, alts in zip(toks, top, strict=True)
                ]
            }
        message = {"role": "assistant", "content": text}
        return (
            200,
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": call.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
                "usage": _usage(call.prompt_tokens, len(toks)),
            },
            {},
        )

    def _completions(self, call: _Call) -> Reply:
        toks, text, finish = _openai_view(call.rule, call.opts)
        logprobs = None
        if call.opts.logprobs and call.rule.logprobs:
            tops, ends = [], list(itertools.accumulate(len(t.text) for t in toks))
            for t in toks:  # as OpenAI/vLLM: the sampled token is always listed, so up to k+1 entries
                top = {s: lp for s, _, lp in t.top[: call.opts.k]}
                top.setdefault(t.text, t.logprob)
                tops.append(top)
            logprobs = {
                "tokens": [t.text for t in toks],
                "token_logprobs": [t.logprob for t in toks],
                "top_logprobs": tops,
                "text_offset": [end - len(t.text) for t, end in zip(toks, ends, strict=True)],
            }
        return (
            200,
            {
                "id": f"cmpl-{next(self._ids)}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": call.model,
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
                "usage": _usage(call.prompt_tokens, len(toks)),
            },
            {},
        )


def _first_tokens(protocol: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The first generated token's entry and its alternatives, in the body's own shape (chat, TGI)."""
    if protocol == "tgi" and body.get("details"):
        return body["details"]["tokens"][0], (body["details"].get("top_tokens") or [[]])[0]
    if protocol == "chat" and body["choices"][0]["logprobs"]:
        first = body["choices"][0]["logprobs"]["content"][0]
        return first, first["top_logprobs"]
    return None


def _chosen_logprob(value: float | None) -> Callable[[str, dict[str, Any]], None]:
    """The first token's logprob (and its own entry among the alternatives) replaced by `value`."""

    def apply(protocol: str, body: dict[str, Any]) -> None:
        if protocol == "completions":
            logprobs = body["choices"][0]["logprobs"]
            if logprobs:
                first = logprobs["tokens"][0]
                logprobs["token_logprobs"][0] = value
                logprobs["top_logprobs"][0][first] = value
            return
        found = _first_tokens(protocol, body)
        if found is not None:
            chosen, alternatives = found
            text_key = "text" if protocol == "tgi" else "token"
            for alt in alternatives:
                if alt[text_key] == chosen[text_key]:
                    alt["logprob"] = value
            chosen["logprob"] = value

    return apply


def _null_content(protocol: str, body: dict[str, Any]) -> None:
    """vLLM with a reasoning parser cut off at max_tokens: the logprobs cover the reasoning, no content."""
    if protocol == "tgi":
        body["generated_text"] = ""
    elif protocol == "chat":
        body["choices"][0]["message"]["content"] = None
    else:
        body["choices"][0]["text"] = None


def _same_text_alternatives(protocol: str, body: dict[str, Any]) -> None:
    """Byte-fallback tokens: distinct alternatives all rendered as the chosen token's text (U+FFFD)."""
    found = _first_tokens(protocol, body)
    if found is not None:
        chosen, alternatives = found
        text_key = "text" if protocol == "tgi" else "token"
        for alt in alternatives:
            alt[text_key] = chosen[text_key]


QUIRKS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "null_logprob": _chosen_logprob(None),  # vLLM: a NaN logprob is sent as null
    "nan_logprob": _chosen_logprob(math.nan),  # Python servers: a bare NaN in the JSON
    "null_content": _null_content,
    "same_text_alternatives": _same_text_alternatives,
}

_PromptOf = Callable[[Mapping[str, Any]], str]
_OptsOf = Callable[[Mapping[str, Any]], _Opts]
_PROTOCOLS: dict[str, tuple[_PromptOf, _OptsOf, Callable[[_Core, _Call], Reply]]] = {
    "tgi": (lambda req: _str(req.get("inputs"), "inputs"), _tgi_opts, _Core._tgi),
    "chat": (_chat_prompt, _chat_opts, _Core._chat),
    "completions": (lambda req: _str(req.get("prompt"), "prompt"), _completions_opts, _Core._completions),
}
_MODEL_ROUTES = {  # (method, path under /m/<model>) -> protocol
    ("POST", ""): "tgi",  # TGI's `/` compat route; hf_hub posts text_generation to the bare base URL
    ("POST", "generate"): "tgi",
    ("POST", "v1/chat/completions"): "chat",
    ("POST", "v1/completions"): "completions",
    ("GET", "health"): "health",
    ("GET", "info"): "info",
    ("POST", "tokenize"): "tokenize",
    ("GET", "v1/models"): "models",
    ("GET", "props"): "props",
    ("POST", "extras/tokenize/count"): "count",
}
SERVERS = ("tgi", "vllm", "llamacpp", "llama-cpp-python")
# (server kind, metadata route) pairs that exist; any other pair is a 404, as on the real server.
_META_ROUTES = {
    ("tgi", "info"), ("tgi", "tokenize"),
    ("vllm", "models"), ("vllm", "tokenize"),
    ("llamacpp", "models"), ("llamacpp", "props"), ("llamacpp", "tokenize"),
    ("llama-cpp-python", "models"), ("llama-cpp-python", "count"),
}  # fmt: skip


def _tokens(body: Any) -> Reply:  # TGI POST /tokenize: one token per whitespace-separated word
    text = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(text, str):
        return _error(422, "`inputs` must be a string")
    spans = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    return 200, [{"id": _token_id(t), "text": t, "start": a, "stop": b} for t, a, b in spans], {}  # type: ignore[return-value]


def _meta(server: str, route: str, model: str, context: int | None, body: Any) -> Reply:
    """The metadata and tokenizer routes of `server` (SERVERS) in its own wire format."""
    if (server, route) not in _META_ROUTES:
        return 404, {"error": f"{server} has no {route} route", "error_type": "not_found"}, {}
    if route == "info":
        return 200, _info(model, context), {}
    if route == "tokenize" and server == "tgi":
        return _tokens(body)
    window = context or 4096
    if route == "models":
        entry: dict[str, Any] = {"id": model, "object": "model", "created": 1700000000, "owned_by": server}
        if server == "vllm":
            entry |= {"root": model, "parent": None, "max_model_len": window, "permission": []}
        elif server == "llamacpp":  # the training context, not the one the server runs with
            entry["meta"] = {"vocab_type": 2, "n_vocab": 49152, "n_ctx_train": 8192, "n_embd": 576}
        else:
            entry["permissions"] = []
        return 200, {"object": "list", "data": [entry]}, {}
    if route == "props":
        settings = {"n_ctx": window, "params": {"n_predict": -1, "temperature": 0.8}, "model": model}
        return 200, {"default_generation_settings": settings, "total_slots": 1, "build_info": "b6000"}, {}
    field = {"vllm": "prompt", "llamacpp": "content", "llama-cpp-python": "input"}[server]
    text = body.get(field) if isinstance(body, dict) else None
    if not isinstance(text, str):
        return _error(422 if server == "llama-cpp-python" else 400, f"`{field}` must be a string")
    ids = [_token_id(word) for word in text.split()]
    if server == "vllm":
        return 200, {"count": len(ids), "max_model_len": window, "tokens": ids, "token_strs": None}, {}
    if server == "llamacpp":
        return 200, {"tokens": ids}, {}
    return 200, {"count": len(ids)}, {}


def _info(model: str, context: int | None = None) -> dict[str, Any]:  # TGI GET /info
    return {
        "model_id": model,
        "model_sha": None,
        "model_dtype": "float16",
        "model_device_type": "cpu",
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": 128,
        "max_best_of": 2,
        "max_stop_sequences": MAX_STOP_SEQUENCES,
        "max_input_tokens": (context or 4096) - 1,
        "max_total_tokens": context or 4096,
        "validation_workers": 2,
        "max_client_batch_size": 4,
        "router": "text-generation-router",
        "version": "endpoint-double",
        "sha": None,
        "docker_label": None,
    }


def _server(kind: Any) -> str:
    if kind not in SERVERS:
        raise ValueError(f"server kind {kind!r} is not one of {', '.join(SERVERS)}")
    return str(kind)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the default backlog of 5 refuses connections under benchmark load

    def __init__(self, address: tuple[str, int], core: _Core) -> None:
        self.core = core
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse-DNS getfqdn() that can stall for seconds in sandboxes.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # timed-out clients hang up
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # headers + body leave in one write (handle_one_request flushes)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""  # always drain the body, or keep-alive desyncs
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(*_error(400, "request body is not valid JSON"))
            return
        self._send(*self._route(method, urlsplit(self.path).path, body))

    def _route(self, method: str, path: str, body: Any) -> Reply:
        core = self.server.core
        not_found: Reply = (404, {"error": f"no route {method} {path}", "error_type": "not_found"}, {})
        if path.startswith("/m/"):
            model, _, sub = path[3:].partition("/")
            route = _MODEL_ROUTES.get((method, sub.rstrip("/")))
            if not model or route is None:
                return not_found
            if route in _PROTOCOLS:
                return core.serve(unquote(model), route, body, self.headers.get("Authorization"))
            if route == "health":
                return 200, {"status": "ok"}, {}
            name = unquote(model)
            return _meta(core.servers.get(name, "tgi"), route, name, core.contexts.get(name), body)
        if (method, path) == ("POST", "/_script"):
            try:
                core.set_script(body.get("rules") or [], body.get("default"))
                core.contexts = {str(k): int(v) for k, v in (body.get("contexts") or {}).items()}
                core.servers = {str(k): _server(v) for k, v in (body.get("servers") or {}).items()}
            except (ValueError, TypeError, AttributeError) as exc:
                return 400, {"error": f"bad script: {exc}", "error_type": "validation"}, {}
            return 200, {"ok": True}, {}
        if (method, path) == ("POST", "/_reset"):
            core.reset()
            return 200, {"ok": True}, {}
        if (method, path) == ("GET", "/_calls"):
            calls, total = core.calls()
            return 200, {"calls": calls, "total": total}, {}
        if (method, path) == ("GET", "/_health"):
            return 200, {"status": "ok"}, {}
        return not_found

    def _send(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class EndpointDouble:
    """In-process handle: serves on a daemon thread; script/calls/reset touch the state directly (no HTTP)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_calls: int = 100_000) -> None:
        self._host, self._port = host, port
        self._core = _Core(max_calls)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EndpointDouble:
        if self._server is None:
            self._server = _Server((self._host, self._port), self._core)
            self._port = self._server.server_port
            # A short poll interval keeps stop() (and SIGTERM in the CLI) snappy; the cost is negligible.
            serve, poll = self._server.serve_forever, {"poll_interval": 0.05}
            self._thread = threading.Thread(target=serve, kwargs=poll, name="endpoint-double")
            self._thread.daemon = True  # never keeps a test run alive
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> EndpointDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def model_url(self, name: str) -> str:
        return f"{self.url}/m/{quote(name, safe='')}"

    def script(self, rules: Iterable[RuleLike], default: RuleLike | None = None) -> None:
        self._core.set_script(rules, default)

    def calls(self) -> list[dict[str, Any]]:
        return self._core.calls()[0]

    def set_contexts(self, contexts: Mapping[str, int]) -> None:
        """Context windows per model, in the double's tokens (whitespace-separated words)."""
        self._core.contexts = dict(contexts)

    def set_servers(self, servers: Mapping[str, str]) -> None:
        """Which server each model's metadata and tokenizer routes speak as (SERVERS; unset: tgi)."""
        self._core.servers = {model: _server(kind) for model, kind in servers.items()}

    def reset(self) -> None:
        self._core.reset()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scriptable TGI/OpenAI inference endpoint double.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    parser.add_argument("--script", help="JSON file in the POST /_script body format")
    parser.add_argument("--max-calls", type=int, default=100_000, help="call-log entries kept")
    args = parser.parse_args(argv)
    return serve(EndpointDouble(args.host, args.port, args.max_calls), args.script)


def serve(double: EndpointDouble, script_path: str | None) -> int:
    """Run `double` in this process until SIGTERM or Ctrl-C, scripted from `script_path` (the POST
    /_script body format) if given; prints `READY <url>` once it listens (tests/support/processes.py's
    `ready_line` reads it)."""
    if script_path:
        with open(script_path, encoding="utf-8") as fh:
            script = json.load(fh)
        double.script(script.get("rules") or [], script.get("default"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind through `finally` to close the socket
    double.start()
    print(f"READY {double.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

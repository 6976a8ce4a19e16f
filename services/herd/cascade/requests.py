"""OpenAI request bodies as Herd prompts: what a task of kind `chat` sends to its models.

A chat task's prompt carries the request as its caller wrote it, in `prompts.fields["request"]`:
`{"url": "/v1/chat/completions" | "/v1/completions", "body": {...}}` (herd/batch/ reads them from
OpenAI batch files). `check` validates a body once, when it is submitted; `generation_request` turns it
into the call a model gets, at every step of the cascade:

- The caller's generation parameters go through as given: `max_tokens` / `max_completion_tokens`,
  `temperature`, `top_p`, `stop`, `seed`, `response_format` and any field Herd does not know (vLLM's
  `top_k`, `repetition_penalty`, ...), for the server to use or refuse. What the caller leaves out comes
  from the model's `generation` in the herd file (`max_new_tokens`, `temperature`), never its `stop`,
  which belongs to Herd's own templates.
- Herd adds only what its decision needs: logprobs, with as many alternatives as the herd file asks
  (`top_logprobs`), or the caller's number if larger. The answer carries back only the logprobs the
  caller asked for (`returned_logprobs`).
- A chat request at a completion-mode model (`prompt_mode: completion`, a base model) becomes a plain
  transcript, "System: ...\\nUser: ...\\nAssistant:", that stops at the next "\\nUser:". A legacy
  completions body always goes to the model's completions endpoint.
- A plain document submitted to a chat task (no request) is one user message.

What Herd cannot honour is refused, naming the field (`RequestError`): streaming, `n` > 1, tools and
function calls, `echo`, `best_of`, content parts other than text; on a TGI model (`/generate`), fields
its API has no place for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from herd.backends.base import CallerLogprobs, GenerationRequest, Prompt, TokenLogprob
from herd.backends.tgi import TGI_PARAMS
from herd.errors import UserError
from herd.herdfile.model import GenerationParams, ModelConfig, PromptMode

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
URLS = (CHAT, COMPLETIONS)
# The key of `prompts.fields` that holds a chat task's request.
REQUEST = "request"
# Where a transcript (a chat request at a completion-mode model) ends the assistant's turn.
TRANSCRIPT_STOP = "\nUser:"
# OpenAI allows 4 stop sequences, as TGI does by default.
MAX_STOPS = 4
# Alternatives per token OpenAI and vLLM return at most; TGI's default cap is lower.
MAX_TOP_LOGPROBS = 20
TGI_MAX_TOP_LOGPROBS = 5

# Set by Herd from the body (or for its decision), never passed through as they are.
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "stop",
        "logprobs",
        "top_logprobs",
        "n",
        "stream",
        "stream_options",
    }
)
# The OpenAI platform's own bookkeeping, meaningless to a self-hosted server.
_DROPPED = frozenset({"metadata", "store", "service_tier"})
# Features a cascade of text answers cannot honour.
_REFUSED = {
    "tools": "tool calls",
    "functions": "function calls",
    "function_call": "function calls",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
    "suffix": "insertion (suffix)",
}


class RequestError(UserError, ValueError):
    """A request body Herd cannot send: `param` is the field (dotted path), `code` OpenAI's kind."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class _Body(BaseModel):
    # Unknown fields are kept: they go to the server as they are.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    # "tool"/"function" messages answer tool calls, which Herd does not make.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: dict[str, Any] | None = None


class CompletionBody(_Body):
    prompt: str | list[str]
    # The legacy API's `logprobs` is the number of alternatives.
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool | None = None
    best_of: int | None = None


@dataclass(frozen=True)
class Checked:
    """A body that passed `check`: what the ledger stores, and the text that stands for it."""

    url: str
    body: dict[str, Any]
    text: str  # the transcript of a chat request, the prompt of a completions one

    def fields(self) -> dict[str, Any]:
        return {REQUEST: {"url": self.url, "body": self.body}}


def check(url: str, body: object, models: Sequence[ModelConfig] = ()) -> Checked:
    """Validate an OpenAI chat/completions (`url` CHAT) or legacy completions (`url` COMPLETIONS) body
    for the `models` that may answer it. Raises RequestError naming the field."""
    if url not in URLS:
        raise RequestError(
            f"Herd answers {CHAT} and {COMPLETIONS} requests, not {url}", param="url", code="invalid_url"
        )
    if not isinstance(body, dict):
        raise RequestError("`body` must be a JSON object", param="body")
    try:
        parsed: ChatBody | CompletionBody = (
            ChatBody.model_validate(body) if url == CHAT else CompletionBody.model_validate(body)
        )
    except ValidationError as exc:
        raise _first_problem(exc) from None
    _refuse(body, parsed)
    caller_top = _caller_top(parsed)
    text = transcript(_messages(parsed)) if isinstance(parsed, ChatBody) else _prompt_text(parsed)
    for model in models:
        if model.protocol == "tgi":
            _check_tgi(body, caller_top)
    return Checked(url, body, text)


def _first_problem(exc: ValidationError) -> RequestError:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"] if not _union_branch(str(part)))
    code = "missing_required_parameter" if error["type"] == "missing" else "invalid_value"
    message = f"`{loc}`: {error['msg']}" if loc else str(error["msg"])
    return RequestError(message, param=loc or None, code=code)


def _union_branch(part: str) -> bool:
    """pydantic names the branch of a union in an error's location (`prompt.list[str]`): not a field."""
    return part in ("str", "int", "float", "bool") or part.startswith(("list[", "dict[", "function-"))


def _refuse(body: Mapping[str, Any], parsed: ChatBody | CompletionBody) -> None:
    for key, what in _REFUSED.items():
        if body.get(key) not in (None, "", [], {}):
            raise RequestError(
                f"Herd's cascade judges text answers: {what} (`{key}`) are not supported", param=key
            )
    if body.get("tool_choice") not in (None, "none"):
        raise RequestError(
            "Herd's cascade judges text answers: `tool_choice` is not supported", param="tool_choice"
        )
    if body.get("modalities") not in (None, ["text"]):
        raise RequestError('Herd returns text only: `modalities` must be ["text"]', param="modalities")
    if parsed.stream:
        raise RequestError("a batch request is answered whole: `stream` must be false", param="stream")
    if parsed.n not in (None, 1):
        raise RequestError("Herd returns one answer per request: `n` must be 1", param="n")
    stops = _stops(parsed.stop)
    if len(stops) > MAX_STOPS:
        raise RequestError(f"`stop` takes at most {MAX_STOPS} sequences", param="stop")
    if isinstance(parsed, ChatBody):
        if parsed.top_logprobs is not None and not parsed.logprobs:
            raise RequestError("`top_logprobs` needs `logprobs: true`", param="top_logprobs")
        for i, message in enumerate(parsed.messages):
            extra = message.model_extra or {}
            if extra.get("tool_calls") or extra.get("function_call"):
                raise RequestError(
                    "Herd's cascade judges text answers: tool calls are not supported",
                    param=f"messages.{i}.tool_calls",
                )
            _content_text(message.content, f"messages.{i}.content")
    else:
        if parsed.echo:
            raise RequestError("Herd returns the completion only: `echo` must be false", param="echo")
        if parsed.best_of not in (None, 1):
            raise RequestError("Herd returns one answer per request: `best_of` must be 1", param="best_of")
        if isinstance(parsed.prompt, list) and len(parsed.prompt) != 1:
            raise RequestError("a batch line holds one prompt: `prompt` must be a string", param="prompt")


def _check_tgi(body: Mapping[str, Any], caller_top: int | None) -> None:
    for key in body:
        if key not in _HANDLED and key not in _DROPPED and key not in TGI_PARAMS and key not in _REFUSED:
            if body[key] is None:
                continue
            raise RequestError(
                f"`{key}` cannot be sent to a TGI model of this route (/generate takes "
                f"{', '.join(sorted(TGI_PARAMS))})",
                param=key,
                code="unsupported_parameter",
            )
    if caller_top is not None and caller_top > TGI_MAX_TOP_LOGPROBS:
        raise RequestError(
            f"a TGI model of this route returns at most {TGI_MAX_TOP_LOGPROBS} alternatives per token",
            param="top_logprobs",
        )


def _caller_top(parsed: ChatBody | CompletionBody) -> int | None:
    if isinstance(parsed, ChatBody):
        return (parsed.top_logprobs or 0) if parsed.logprobs else None
    return parsed.logprobs


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    return [s for s in stops if s]


def _content_text(content: str | list[dict[str, Any]], param: str) -> str:
    """A message's text: its string, or its text parts joined (images and audio are refused)."""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type", "untyped")
            raise RequestError(
                f"Herd sends text only: a {kind!r} content part is not supported", param=f"{param}.{i}"
            )
        texts.append(part["text"])
    return "".join(texts)


def _messages(parsed: ChatBody) -> list[tuple[str, str]]:
    # `developer` is OpenAI's newer name for `system`; self-hosted chat templates know `system`.
    return [
        ("system" if m.role == "developer" else m.role, _content_text(m.content, "content"))
        for m in parsed.messages
    ]


def _prompt_text(parsed: CompletionBody) -> str:
    return parsed.prompt if isinstance(parsed.prompt, str) else parsed.prompt[0]


def transcript(messages: Sequence[tuple[str, str]], *, open_turn: bool = False) -> str:
    """A conversation as plain text, one "Role: content" line per message; `open_turn` ends it with
    "Assistant:" for a base model to continue."""
    lines = [f"{role.capitalize()}: {content}" for role, content in messages]
    if open_turn:
        lines.append("Assistant:")
    return "\n".join(lines)


def generation_request(
    text: str, fields: Mapping[str, Any], mode: PromptMode, params: GenerationParams
) -> GenerationRequest:
    """The call for a chat task's prompt at a model with prompt mode `mode` and herd-file generation
    `params`. The body was checked when submitted (`check`); a prompt without one is a plain document,
    sent as one user message."""
    request = fields.get(REQUEST) or {"url": CHAT, "body": {"messages": [{"role": "user", "content": text}]}}
    url, body = request["url"], request["body"]
    stops = _stops(body.get("stop"))
    if url == COMPLETIONS:
        prompt_text = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
        prompt = Prompt(mode="completion", text=prompt_text)
        top = body.get("logprobs")
        asked = CallerLogprobs("completions", int(top)) if top is not None else None
    else:
        messages = tuple(
            ("system" if m["role"] == "developer" else m["role"], _content_text(m["content"], "content"))
            for m in body["messages"]
        )
        if mode == "chat":
            prompt = Prompt(mode="chat", messages=messages)
        else:
            prompt = Prompt(mode="completion", text=transcript(messages, open_turn=True))
            stops.append(TRANSCRIPT_STOP)
        asked = CallerLogprobs("chat", int(body.get("top_logprobs") or 0)) if body.get("logprobs") else None
    temperature = body.get("temperature")
    return GenerationRequest(
        prompt=prompt,
        max_new_tokens=int(
            body.get("max_completion_tokens") or body.get("max_tokens") or params.max_new_tokens
        ),
        stop=tuple(stops),
        temperature=float(temperature) if temperature is not None else params.temperature,
        top_logprobs=max(params.top_logprobs, asked.top if asked else 0),
        extra={k: v for k, v in body.items() if k not in _HANDLED and k not in _DROPPED and v is not None},
        caller_logprobs=asked,
    )


def returned_logprobs(tokens: Sequence[TokenLogprob], asked: CallerLogprobs | None) -> dict[str, Any] | None:
    """The answer's logprobs in OpenAI's shape, with the `top` alternatives the caller asked for: chat's
    `{"content": [{token, logprob, bytes, top_logprobs}]}` or the legacy `{tokens, token_logprobs,
    top_logprobs, text_offset}`. None when the caller asked for none (Herd's own are not returned)."""
    if asked is None:
        return None
    if asked.shape == "completions":
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token.token)
        return {
            "tokens": [t.token for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top[: asked.top]) for t in tokens],
            "text_offset": offsets,
        }
    return {
        "content": [
            {
                **_entry(t.token, t.logprob),
                "top_logprobs": [_entry(alt, logprob) for alt, logprob in t.top[: asked.top]],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8", "surrogatepass"))}

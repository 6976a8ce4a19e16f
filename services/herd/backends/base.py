"""The wire types of every backend: what a call takes (`Prompt`, `GenerationRequest`), the one result
it returns (`Generation` of `TokenLogprob`s), and the errors it may raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from herd.errors import ServiceError
from herd.herdfile.model import PromptMode
from herd.redact import mask_url, redact


@dataclass(frozen=True)
class Prompt:
    """What a model is asked: completion `text`, or chat `messages` as (role, content) pairs."""

    mode: PromptMode
    text: str = ""
    messages: tuple[tuple[str, str], ...] = ()

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its logprob and the server's top-k alternatives (token, logprob)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    special: bool = False


@dataclass(frozen=True)
class Timing:
    """Seconds. `latency_s` is measured by Herd; the rest come from the server when it reports them."""

    latency_s: float
    queue_s: float | None = None
    inference_s: float | None = None
    compute_s: float | None = None


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: tuple[TokenLogprob, ...]
    prompt_tokens: int | None
    generated_tokens: int
    finish_reason: str | None
    timing: Timing
    endpoint: str = ""


@dataclass(frozen=True)
class CallerLogprobs:
    """The logprobs the caller of an OpenAI request asked to get back (herd/cascade/requests.py):
    `shape` "chat" (`logprobs.content`) or "completions" (the legacy arrays), `top` alternatives each."""

    shape: str
    top: int


@dataclass(frozen=True)
class GenerationRequest:
    """What one model call sends. `top_logprobs`: the alternatives Herd's measures need (the server
    always returns logprobs). `extra`: a caller's other generation parameters, sent as they are
    (top_p, seed, response_format, ...). `caller_logprobs`: what the caller itself asked for, None: none."""

    prompt: Prompt
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_logprobs: int = 5
    extra: dict[str, object] = field(default_factory=dict)
    caller_logprobs: CallerLogprobs | None = None


class Backend(Protocol):
    def generate(self, request: GenerationRequest) -> Generation: ...


class BackendError(ServiceError):
    """An inference call failed. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "") -> None:
        # Logged and stored with the attempt: no credentials, even from an endpoint URL that has them.
        super().__init__(redact(message))
        self.status = status
        self.endpoint = mask_url(endpoint) if endpoint else endpoint


class RetryableError(BackendError):
    """Worth trying again later: overloaded (429), unavailable (503), 5xx, timeouts, refused connections.

    `retry_after_s`: the server's own `Retry-After` (seconds, >= 0) when it sent one; the retry then
    waits at least that long (Retries.delay_s), instead of coming back sooner into the same overload."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.retry_after_s = retry_after_s


class PermanentError(BackendError):
    """Will fail the same way again: bad request (400/422, e.g. prompt too long), malformed response."""


class MissingLogprobsError(PermanentError):
    """The server answered without logprobs, so the cascade cannot judge the answer."""

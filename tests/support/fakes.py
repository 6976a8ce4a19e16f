"""A backend with queued replies and a request history, for testing the cascade in process
(the Celery plumbing and the wire protocols are tested elsewhere, end to end)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from herd.backends.base import BackendError, Generation, GenerationRequest, Timing, TokenLogprob

Reply = Generation | BackendError | Callable[[GenerationRequest], Generation]


def generation(text: str, *, p_first: float = 0.9, latency_s: float = 0.01) -> Generation:
    """A one-token answer whose first-token margin is p_first - (1 - p_first)."""
    other = max(1e-9, 1.0 - p_first)
    token = TokenLogprob(text, math.log(p_first), ((text, math.log(p_first)), ("<other>", math.log(other))))
    return Generation(
        text=text,
        tokens=(token,),
        prompt_tokens=10,
        generated_tokens=1,
        finish_reason="stop",
        timing=Timing(latency_s=latency_s),
        endpoint="http://fake",
    )


@dataclass
class FakeBackend:
    """Answers with the queued replies in order (then `default`); raises a queued BackendError."""

    default: Generation = field(default_factory=lambda: generation("ok"))
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[GenerationRequest] = field(default_factory=list)

    def queue(self, *replies: Reply) -> FakeBackend:
        self.replies.extend(replies)
        return self

    def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        reply = self.replies.popleft() if self.replies else self.default
        if isinstance(reply, BackendError):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

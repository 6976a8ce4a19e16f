"""Token-level uncertainty of one generation, from the logprobs the server returned.

Pure functions over normalized tokens. All logs are natural; entropies are in nats.
Special tokens (EOS and the like, flagged by TGI) are left out: they say nothing about the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from herd.backends.base import TokenLogprob
from herd.errors import ServiceError


@dataclass(frozen=True)
class Uncertainty:
    first_token_margin: float
    mean_entropy: float
    max_entropy: float
    mean_nll: float

    def value(self, measure: str) -> float:
        return float(getattr(self, measure))


class NoTokensError(ServiceError, ValueError):
    """A generation without any scorable token: uncertainty cannot be computed."""


# How close an alternative's logprob must be to the chosen token's to be that same token listed again:
# servers compute both from one float, but some round them separately (float32 vs float64, JSON).
SAME_LOGPROB = 1e-4


def candidates(token: TokenLogprob) -> list[float]:
    """Logprobs of the alternatives at this position, best first, the chosen token always among them.

    Each entry of the server's top list is a distinct token, even when two share one text: byte-fallback
    tokens of an emoji, a CJK character or a curly quote all decode to U+FFFD (or to "" in some vLLM
    versions). They are different choices the model weighed, so they are neither merged by text (a later,
    lower entry would overwrite the top one) nor summed (two different byte sequences are not one answer).
    The only entry that may repeat is the chosen token itself, which most servers list in the top list
    and TGI sometimes leaves out (ties, top_p): it is added unless an entry with its text and its logprob
    is already there. The legacy completions format is a {text: logprob} object, so same-text
    alternatives are already merged by the server's JSON there; nothing here can recover them.
    """
    logprobs = [lp for _, lp in token.top]
    listed = any(
        text == token.token and math.isclose(lp, token.logprob, rel_tol=0.0, abs_tol=SAME_LOGPROB)
        for text, lp in token.top
    )
    if not listed:
        logprobs.append(token.logprob)
    return sorted(logprobs, reverse=True)


def margin(token: TokenLogprob) -> float:
    """p(top1) - p(top2) at one position (Ramírez et al. 2024 use the first generated token).

    With a single known alternative, p(top2) is bounded by the tail mass 1 - p(top1); using the
    bound is conservative: it never makes an unsure answer look sure.
    """
    lps = candidates(token)
    p1 = math.exp(lps[0])
    p2 = math.exp(lps[1]) if len(lps) > 1 else max(0.0, 1.0 - p1)
    return p1 - p2


def entropy(token: TokenLogprob) -> float:
    """Entropy of the top-k distribution renormalized to sum to one (a truncated estimate)."""
    lps = candidates(token)
    top = max(lps)
    weights = [math.exp(lp - top) for lp in lps]
    total = sum(weights)
    return -sum((w / total) * math.log(w / total) for w in weights if w > 0)


def scorable(tokens: Sequence[TokenLogprob]) -> list[TokenLogprob]:
    return [t for t in tokens if not t.special]


def measure(tokens: Sequence[TokenLogprob]) -> Uncertainty:
    kept = scorable(tokens)
    if not kept:
        raise NoTokensError("the generation has no scorable tokens")
    entropies = [entropy(t) for t in kept]
    return Uncertainty(
        first_token_margin=margin(kept[0]),
        mean_entropy=sum(entropies) / len(entropies),
        max_entropy=max(entropies),
        mean_nll=-sum(t.logprob for t in kept) / len(kept),
    )

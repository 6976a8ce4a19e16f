"""Stop sequences end an answer; they are not part of it, whatever the protocol.

OpenAI-compatible servers (vLLM, SGLang, llama.cpp) cut the stop text off; TGI's `/generate` keeps it
at the end of `generated_text` and among the tokens. Left in, the same answer would differ by protocol
("Paris\\nQ:" against "Paris"): exact match and F1 scores, the judge's input and exports with it, and the
stop's own tokens would count in the entropy and NLL averages. Every backend's result passes through
`without_stop` (see `herd.backends.registry.make_backend`), so the rule lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from herd.backends.base import Generation


def without_stop(generation: Generation, stop: Sequence[str]) -> Generation:
    """`generation` with the stop sequence it ends on (the longest, if several match) removed from its
    text, and the trailing tokens that lie wholly inside that stop text removed from its tokens.

    A token that straddles the boundary (part answer, part stop) is kept: it carries answer text.
    `generated_tokens` is unchanged: the server did generate the stop, and the cost counts it."""
    text = generation.text
    matched = max((s for s in stop if s and text.endswith(s)), key=len, default=None)
    if matched is None:
        return generation
    tokens = list(generation.tokens)
    suffix = ""
    while tokens and matched.endswith(tokens[-1].token + suffix):
        suffix = tokens.pop().token + suffix
        if suffix == matched:
            break
    return replace(generation, text=text[: -len(matched)], tokens=tuple(tokens))

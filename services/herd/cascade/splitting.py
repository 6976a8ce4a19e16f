"""Cut a long document to a size: chunks on paragraph and sentence boundaries with overlap, or one
head (or head and tail) piece. Pure functions on characters; herd/cascade/chunks.py turns a model's
token budget into characters with the document's own measured characters-per-token ratio.

Boundaries, coarsest first: a paragraph (a blank line), a sentence (`.`, `!` or `?` then white
space), a word; a single "word" longer than a whole chunk (a URL, a base64 blob) is cut where it
must. Chunks never exceed `max_chars`; each after the first starts with up to `overlap_chars` of the
end of the previous one, in whole units, so a fact on a boundary is seen whole by one chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
ELISION = "\n\n[...]\n\n"  # marks where head_tail truncation left text out


@dataclass(frozen=True)
class _Unit:
    text: str
    new_paragraph: bool  # joined to the previous unit with a blank line (else a space)


def _units(text: str, max_chars: int) -> list[_Unit]:
    """Sentences (word runs where a sentence is longer than a chunk), each knowing whether it starts
    a paragraph: sentence units let the overlap be a sentence or two rather than a paragraph."""
    units: list[_Unit] = []
    for paragraph in _PARAGRAPH.split(text.strip()):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            units.extend(_Unit(piece, i == 0) for i, piece in enumerate(_fine(paragraph, max_chars)))
    return units


def _fine(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph longer than a chunk as sentences, sentences longer than a chunk as word runs."""
    out: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        if len(sentence) <= max_chars:
            out.append(sentence)
            continue
        run = ""
        for word in sentence.split(" "):
            while len(word) > max_chars:  # no boundary at all: cut
                if run:
                    out.append(run)
                    run = ""
                out.append(word[:max_chars])
                word = word[max_chars:]
            if run and len(run) + 1 + len(word) > max_chars:
                out.append(run)
                run = word
            else:
                run = f"{run} {word}" if run else word
        if run:
            out.append(run)
    return out


def _join(units: list[_Unit]) -> str:
    parts: list[str] = []
    for i, unit in enumerate(units):
        if i:
            parts.append("\n\n" if unit.new_paragraph else " ")
        parts.append(unit.text)
    return "".join(parts)


def _length(units: list[_Unit]) -> int:
    return sum(len(u.text) for u in units) + 2 * max(len(units) - 1, 0)  # separators at most 2 chars


def chunk(text: str, max_chars: int, overlap_chars: int = 0) -> list[str]:
    """`text` in consecutive chunks of at most `max_chars` characters (see the module docstring).

    A chunk ends at the last paragraph start in its final 40% when there is one, else at a sentence."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    overlap_chars = min(overlap_chars, max_chars // 2)  # a chunk is mostly new text
    chunks: list[list[_Unit]] = []
    current: list[_Unit] = []
    fresh = 0  # units at the end of `current` that are not overlap
    for unit in _units(text, max_chars):
        if current and _length([*current, unit]) > max_chars:
            carry = _paragraph_carry(current, fresh, max_chars)
            done = current[: len(current) - len(carry)]
            chunks.append(done)
            current = _tail(done, overlap_chars) + carry
            while len(current) > len(carry) and _length([*current, unit]) > max_chars:
                current = current[1:]  # drop overlap before ever dropping text
            fresh = len(carry)
        current.append(unit)
        fresh += 1
    if current and fresh:
        chunks.append(current)
    return [_join(units) for units in chunks]


def _paragraph_carry(current: list[_Unit], fresh: int, max_chars: int) -> list[_Unit]:
    """The units after the last paragraph start in the final 40% of a full chunk: they move to the
    next chunk, so this one ends on a paragraph boundary. Empty when there is none."""
    first_fresh = len(current) - fresh
    for i in range(len(current) - 1, first_fresh, -1):
        if current[i].new_paragraph:
            if _length(current[:i]) >= 0.6 * max_chars:
                return current[i:]
            break
    return []


def _tail(units: list[_Unit], budget: int) -> list[_Unit]:
    """The last whole units of a chunk that fit in `budget` characters: the next chunk's overlap."""
    kept: list[_Unit] = []
    for unit in reversed(units):
        if _length([unit, *kept]) > budget:
            break
        kept.insert(0, unit)
    return kept


def head(text: str, max_chars: int) -> str:
    """The longest start of `text` within `max_chars` that ends on a sentence or word boundary."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    for boundary in (_last_sentence_end(cut), cut.rfind(" ")):
        if boundary > max_chars // 2:
            return cut[:boundary].rstrip()
    return cut


def tail(text: str, max_chars: int) -> str:
    """The shortest end of `text` within `max_chars` that starts on a sentence or word boundary."""
    if len(text) <= max_chars:
        return text
    cut = text[-max_chars:]
    starts = [m.end() for m in _SENTENCE.finditer(cut)]
    for boundary in (starts[0] if starts else -1, cut.find(" ") + 1 if " " in cut else -1):
        if 0 <= boundary < max_chars // 2:
            return cut[boundary:].lstrip()
    return cut


def head_tail(text: str, max_chars: int) -> str:
    """The start and the end of `text` (half each) with `ELISION` between, within `max_chars`."""
    if len(text) <= max_chars:
        return text
    half = (max_chars - len(ELISION)) // 2
    return head(text, half) + ELISION + tail(text, half)


def _last_sentence_end(text: str) -> int:
    ends = [m.start() for m in _SENTENCE.finditer(text)]
    return ends[-1] if ends else -1

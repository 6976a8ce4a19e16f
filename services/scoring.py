"""Is an answer right? Normalized comparisons against a document's reference."""

from __future__ import annotations

import re
import string
import unicodedata

from services.config import TaskConfig

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    """Lowercase, accents and punctuation dropped, whitespace folded: 'Bogotá.' == ' bogota'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_PUNCT.sub(" ", folded).split())


def label_of(task: TaskConfig, answer: str) -> str | None:
    """The label an answer names: its first word(s) matching a label or one of the label's aliases."""
    said = normalize(answer)
    for label in task.labels:
        for spelling in (label, *task.aliases.get(label, [])):
            wanted = normalize(spelling)
            if said == wanted or said.startswith(wanted + " "):
                return label
    return None


def correct(task: TaskConfig, answer: str | None, reference: str | None) -> bool | None:
    """True/False against the reference; None when there is nothing to compare with."""
    if reference is None or answer is None:
        return None
    if task.kind == "classify":
        return label_of(task, answer) == next(
            (label for label in task.labels if normalize(label) == normalize(reference)), reference
        )
    said, wanted = normalize(answer), normalize(reference)
    return said == wanted or said.startswith(wanted + " ")

"""Task templates: turn a document (text, reference, fields) into a chat or completion prompt."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from herd.backends.base import Prompt
from herd.errors import UserError
from herd.herdfile.model import PromptMode, TaskConfig

DEFAULT_CHAT: dict[str, str] = {
    "summarize": "Summarize the following document in a few sentences.\n\n{text}",
    "classify": (
        "Classify the text into exactly one of these labels: {labels}. "
        "Answer with the label only.\n\nText: {text}"
    ),
    "extract": (
        "Extract these fields from the document: {fields}. "
        "Answer with one JSON object with exactly those keys.\n\n{text}"
    ),
    "qa": "Answer the question with a short answer, a few words at most.\n\n{text}",
}
# Names every template may use without the document providing them.
BUILTINS: frozenset[str] = frozenset({"text", "labels", "fields", "instruction"})


class RenderError(UserError, ValueError):
    """A document lacks a field its task template needs."""


def template_for(task: TaskConfig, mode: PromptMode) -> str:
    if mode == "completion":
        if task.completion is None:
            raise RenderError("task has no completion template")
        return task.completion
    template = task.chat or DEFAULT_CHAT.get(task.kind)
    if template is None:
        raise RenderError("task has no chat template")
    return template


def placeholders(template: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def required_fields(task: TaskConfig, modes: set[PromptMode]) -> set[str]:
    """Fields a document must carry for every prompt mode the task's route uses (none for a chat task:
    its prompts are request bodies, herd/cascade/requests.py)."""
    names: set[str] = set()
    if task.kind == "chat":
        return names
    for mode in modes:
        names |= placeholders(template_for(task, mode))
        if mode == "chat" and task.system:
            names |= placeholders(task.system)
    return names - BUILTINS


def render(task: TaskConfig, mode: PromptMode, text: str, fields: Mapping[str, Any]) -> Prompt:
    values: dict[str, Any] = {
        **fields,
        "text": text,
        "labels": ", ".join(task.labels),
        "fields": ", ".join(task.fields),
        "instruction": task.instruction or "",
    }
    try:
        body = template_for(task, mode).format(**values)
        if mode == "completion":
            return Prompt(mode=mode, text=body)
        messages: tuple[tuple[str, str], ...] = (
            (("system", task.system.format(**values)),) if task.system else ()
        )
        return Prompt(mode=mode, messages=messages + (("user", body),))
    except KeyError as exc:
        raise RenderError(f"the template needs field {exc.args[0]!r}, which the document lacks") from None


def followup(prompt: Prompt, answer: str, instruction: str) -> Prompt:
    """The same conversation continued: the model's answer, then a new instruction (self-refinement)."""
    if prompt.mode == "completion":
        return Prompt(mode="completion", text=f"{prompt.text} {answer.strip()}\n\n{instruction}\n")
    return Prompt(mode="chat", messages=prompt.messages + (("assistant", answer), ("user", instruction)))

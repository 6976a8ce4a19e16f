"""Load YAML while remembering the line of every key, so config errors can name `file:line`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from herd.errors import UserError

Path_ = tuple[str | int, ...]


class YamlError(UserError, ValueError):
    """A YAML file that cannot be used; the message starts with `file:line:`."""


def load_with_lines(path: Path) -> tuple[Any, dict[Path_, int]]:
    """Parse `path`; return the data and a map from key path (e.g. ("models", "small", "gpus")) to line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlError(f"{path}: cannot read herd file: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise YamlError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if node is None:
        return {}, {}
    lines: dict[Path_, int] = {}
    _walk(path, node, (), lines)
    return yaml.safe_load(text), lines


def _walk(path: Path, node: yaml.Node, at: Path_, lines: dict[Path_, int]) -> None:
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            # PyYAML silently keeps the last of two equal keys; in a herd file that hides a mistake.
            if key in seen:
                raise YamlError(f"{path}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
            lines[at + (key,)] = key_node.start_mark.line + 1
            _walk(path, value_node, at + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(path, item, at + (index,), lines)


def line_of(lines: dict[Path_, int], at: Path_) -> int | None:
    """The line of the deepest known prefix of `at` (pydantic locations may point below a scalar)."""
    for end in range(len(at), -1, -1):
        if at[:end] in lines:
            return lines[at[:end]]
    return None

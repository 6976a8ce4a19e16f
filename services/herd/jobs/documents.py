"""Read a document set as a stream of records: folders or globs of .txt/.md, JSONL, CSV.

Every record remembers where it came from, so bad input is reported as `file:line: what is wrong`.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md")
RESERVED = ("id", "text", "reference")


class InputError(ValueError):
    """A document set that cannot be submitted; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    key: str
    text: str
    reference: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def expand(paths: list[str]) -> list[Path]:
    """Files named by the arguments: files as given, folders searched for .txt/.md, globs expanded."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise InputError(f"{path}: folder has no .txt or .md files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(raw):
            matched = sorted(Path(p) for p in glob.glob(raw, recursive=True) if Path(p).is_file())
            if not matched:
                raise InputError(f"{raw}: pattern matches no files")
            files.extend(matched)
        else:
            raise InputError(f"{raw}: no such file or folder")
    for path in files:
        if path.suffix.lower() not in (*TEXT_SUFFIXES, ".jsonl", ".csv"):
            raise InputError(f"{path}: unsupported file type (use .txt, .md, .jsonl or .csv)")
    return files


def read(files: list[Path], *, text_column: str = "text") -> Iterator[Record]:
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _jsonl(path)
        elif suffix == ".csv":
            yield from _csv(path, text_column)
        else:
            yield _text_file(path)


def _text_file(path: Path) -> Record:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise InputError(f"{path}: empty document")
    return Record(key=str(path), text=text, reference=None, source=str(path))


def _jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                item = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{where}: invalid JSON: {exc}") from None
            if not isinstance(item, dict):
                raise InputError(f"{where}: each line must be a JSON object")
            yield _record(item, where)


def _csv(path: Path, text_column: str) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)  # long documents are the point, not an error
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or text_column not in reader.fieldnames:
            raise InputError(f"{path}:1: no {text_column!r} column (columns: {reader.fieldnames})")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            item: dict[str, Any] = dict(row)
            item["text"] = item.pop(text_column)
            item.setdefault("id", f"row-{reader.line_num}")
            if item.get("reference") == "":
                item["reference"] = None
            yield _record(item, where)


def _record(item: dict[str, Any], where: str) -> Record:
    key = item.get("id")
    if key is None or (isinstance(key, str) and not key.strip()) or isinstance(key, (dict, list, bool)):
        raise InputError(f"{where}: missing or invalid `id`")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: `text` must be a non-empty string")
    reference = item.get("reference")
    if reference is not None and not isinstance(reference, str):
        reference = json.dumps(reference) if isinstance(reference, (dict, list)) else str(reference)
    fields = {k: v for k, v in item.items() if k not in RESERVED}
    return Record(key=str(key), text=text, reference=reference, fields=fields, source=where)

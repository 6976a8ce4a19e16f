"""The OpenAI batch input format, read as a stream: one JSON object per line,
`{"custom_id": str, "method": "POST", "url": "/v1/chat/completions" | "/v1/completions", "body": {...}}`
(the same lines `vllm run-batch` reads). Blank lines are skipped; lines are numbered from 1 counting
them, as an editor does. A line's problems are `LineError`s, OpenAI's `errors.data` entries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from herd.errors import UserError

# A request line longer than this is refused without being held whole in memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
# A custom_id is a key of the ledger (prompts.doc_key): long enough for any id scheme, not a document.
MAX_CUSTOM_ID = 512
# JSON escapes of what a string may hold but Postgres cannot: NUL, and UTF-16 surrogates (a lone one
# parses, but UTF-8 cannot encode it). Only a line with one is searched character by character.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class LineError:
    """One problem of an input file: `line` (1-based; None for the file as a whole), OpenAI's `code`,
    a `message`, and the field (`param`, a dotted path) when there is one."""

    line: int | None
    code: str
    message: str
    param: str | None = None

    def as_openai(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}

    def where(self, source: str) -> str:
        """`source:line: param: message`, Herd's one-line form of an input error."""
        at = f"{source}:{self.line}" if self.line is not None else source
        field = f"{self.param}: " if self.param and not self.message.startswith("`") else ""
        return f"{at}: {field}{self.message}"


class LineProblem(UserError, ValueError):
    """A line that cannot be a request; carries its LineError."""

    def __init__(self, error: LineError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class BatchLine:
    """A well-formed request line. `body` is checked against its route later (herd/batch/submit.py)."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body["model"])


TOO_LONG = b""  # the stand-in `numbered_lines` yields for a line over MAX_LINE_BYTES


def numbered_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a byte stream, with their 1-based numbers. Memory is one line (at most
    `max_line` bytes) plus one chunk: a longer line is skipped as it streams by and yielded as TOO_LONG."""
    number = 0
    pending = bytearray()
    skipping = False
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not skipping:
                    pending += chunk[start:]
                    if len(pending) > max_line:
                        skipping, pending = True, bytearray()
                break
            number += 1
            if skipping:
                skipping = False
                yield number, TOO_LONG
            else:
                pending += chunk[start:end]
                if len(pending) > max_line:
                    yield number, TOO_LONG
                elif pending.strip():
                    yield number, bytes(pending)
            pending = bytearray()
            start = end + 1
    if skipping:
        yield number + 1, TOO_LONG
    elif pending.strip():
        yield number + 1, bytes(pending)


def parse(number: int, raw: bytes) -> BatchLine:
    """One input line as a request. Raises LineProblem naming the line and field."""

    def problem(message: str, param: str | None = None, code: str = "invalid_value") -> LineProblem:
        return LineProblem(LineError(number, code, message, param))

    if raw is TOO_LONG:
        raise problem(f"the line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB", code="line_too_long")
    try:
        # utf-8-sig: an editor's byte order mark before the first line. NaN and Infinity are not JSON,
        # and Postgres jsonb refuses them.
        obj = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise problem(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x})", code="invalid_json_line"
        ) from None
    except ValueError as exc:  # json.JSONDecodeError, or NaN/Infinity
        raise problem(f"not valid JSON: {exc}", code="invalid_json_line") from None
    except RecursionError:  # json's parser recurses once per level: `[[[[...` past the stack
        raise problem("not valid JSON: nested too deeply to read", code="invalid_json_line") from None
    if not isinstance(obj, dict):
        raise problem("a request line must be a JSON object", code="invalid_json_line")
    if _UNSTORABLE_ESCAPE.search(raw):
        bad = _unstorable(obj)
        if bad is not None:
            raise problem(f"the request contains {bad}, which the ledger cannot store")
    for key in ("custom_id", "method", "url", "body"):
        if key not in obj:
            raise problem(f"`{key}` is missing", key, "missing_required_parameter")
    custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
    if not isinstance(custom_id, str) or not custom_id:
        raise problem("`custom_id` must be a non-empty string", "custom_id")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise problem(f"`custom_id` is longer than {MAX_CUSTOM_ID} characters", "custom_id")
    if method != "POST":
        raise problem(f"`method` must be POST, not {method!r}", "method")
    if not isinstance(url, str):
        raise problem("`url` must be a string", "url")
    if not isinstance(body, dict):
        raise problem("`body` must be a JSON object", "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise problem(
            "`body.model` must name a model or route of the herd",
            "body.model",
            "missing_required_parameter" if "model" not in body else "invalid_value",
        )
    return BatchLine(number, custom_id, url, body)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def _unstorable(value: Any) -> str | None:
    """What in a parsed JSON value (keys included) Postgres cannot store, or None."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        char = found.group()
        return (
            "U+0000 (NUL)"
            if char == "\x00"
            else f"an unpaired surrogate \\u{ord(char):04x} (half a character)"
        )
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        bad = _unstorable(key) if isinstance(key, str) else None
        if bad is None:
            bad = _unstorable(inner)
        if bad is not None:
            return bad
    return None


def looks_like_batch(first_line: bytes) -> bool:
    """Whether a JSONL file's first non-blank line is a batch request (`custom_id` and `body`) rather
    than a Herd document (`id` and `text`)."""
    try:
        obj = json.loads(first_line)
    except (ValueError, RecursionError):  # not JSON, or nested past the stack: the reader says which line
        return False
    return isinstance(obj, dict) and "custom_id" in obj and "body" in obj

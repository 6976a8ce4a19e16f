"""Read a document set as a stream of records: folders or globs of .txt/.md, PDF, DOCX and HTML
(converted to text by herd/jobs/converters.py), JSONL, CSV.

Every record remembers where it came from, so bad input is reported as `file:line: what is wrong`:
a CSV row with more or fewer fields than its header (an unquoted comma), text that is not UTF-8,
NUL characters (Postgres text cannot hold them) and unpaired surrogates (half an emoji, from a JSON
escape; UTF-8 cannot encode them) are refused before anything is written, never a traceback.

A .txt/.md/.pdf/.docx/.html document's key is `<folder>/<path inside it>`, the folder being the one
given (for a folder argument), the literal folder a glob starts from, or the file's own folder (for a file
argument), after resolving it. So `docs`, `./docs/`, `/abs/docs`, `.` inside `docs` and
`docs/*.txt` all give `docs/a.txt`, from any working directory, and submitting the same files to a
job again adds nothing. Keys change only if the files move to a folder of another name, or are
given through a different folder (`docs/sub/*.txt` gives `sub/x.txt`, `docs` gives `docs/sub/x.txt`).
"""

from __future__ import annotations

import csv
import glob
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.input_errors import InputError
from herd.jobs import walk
from herd.jobs.converters import UnreadableError, convert

TEXT_SUFFIXES = (".txt", ".md")
# One document per file, converted to text (herd/jobs/converters.py); keyed like .txt/.md.
CONVERTED_SUFFIXES = (".pdf", ".docx", ".html", ".htm")
DOCUMENT_SUFFIXES = TEXT_SUFFIXES + CONVERTED_SUFFIXES
RESERVED = ("id", "text", "reference")


@dataclass(frozen=True)
class Record:
    key: str
    text: str
    reference: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class InputFile:
    """A file to read: `path` as the user spelled it (for messages), `base` the folder its documents'
    keys are relative to (.txt/.md only; see the module docstring)."""

    path: Path
    base: Path

    @property
    def key(self) -> str:
        # Absolute, with `.` and `..` folded, but symlinks kept as named: a link inside the folder
        # stays inside it, and a folder reached through a link keeps the link's name.
        root = Path(os.path.abspath(self.base))
        inside = Path(os.path.abspath(self.path)).relative_to(root)
        return (Path(root.name) / inside).as_posix() if root.name else inside.as_posix()


def expand(paths: list[str]) -> list[InputFile]:
    """Files named by the arguments: files as given, folders searched for documents, globs expanded;
    each real file once, and no link to a folder followed below a folder or a glob's literal part
    (herd/jobs/walk.py: a link loop would list the documents again and again, or forever)."""
    files: list[InputFile] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [p for p in walk.folder_files(path) if p.suffix.lower() in DOCUMENT_SUFFIXES]
            if not found:
                raise InputError(f"{path}: folder has no .txt, .md, .pdf, .docx or .html files")
            files.extend(InputFile(p, path) for p in found)
        elif path.is_file():
            files.append(InputFile(path, path.parent))
        elif glob.has_magic(raw):
            matched = walk.glob_files(raw)
            if not matched:
                raise InputError(f"{raw}: pattern matches no files")
            files.extend(InputFile(p, _literal_folder(raw)) for p in matched)
        else:
            raise InputError(f"{raw}: no such file or folder")
    for file in files:
        if file.path.suffix.lower() not in (*DOCUMENT_SUFFIXES, ".jsonl", ".csv"):
            raise InputError(
                f"{file.path}: unsupported file type (use .txt, .md, .pdf, .docx, .html, .jsonl or .csv)"
            )
    return _once(files)


def _once(files: list[InputFile]) -> list[InputFile]:
    """`files` without a second path to a file already listed (a link, a hard link, an argument that
    names a file inside a folder also given): the first spelling keeps it."""
    seen: set[tuple[int, int]] = set()
    kept: list[InputFile] = []
    for file in files:
        try:
            real = walk.identity(file.path)
        except OSError:  # vanished or unreadable: reading it reports that, naming the file
            kept.append(file)
            continue
        if real not in seen:
            seen.add(real)
            kept.append(file)
    return kept


def _literal_folder(pattern: str) -> Path:
    """The folder a glob starts from: its leading parts without wildcards (`docs` for `docs/*.txt`)."""
    parts = Path(pattern).parts
    literal = [part for part in itertools.takewhile(lambda part: not glob.has_magic(part), parts)]
    return Path(*literal) if literal else Path(".")


# Told about a file that cannot be read (`herd submit --skip-unreadable`): the file (its `key` is
# the document key it would have had) and the reason.
OnUnreadable = Callable[[InputFile, str], None]


def read(
    files: Sequence[InputFile | Path], *, text_column: str = "text", on_unreadable: OnUnreadable | None = None
) -> Iterator[Record]:
    """The records of `files`; a bare Path is keyed like a file argument (relative to its folder).

    A PDF/DOCX/HTML file that gives no text raises `converters.UnreadableError` (`file: reason`),
    unless `on_unreadable` is given: then it is told, and reading goes on with the next file."""
    for file in files:
        if isinstance(file, Path):
            file = InputFile(file, file.parent)
        suffix = file.path.suffix.lower()
        if suffix in CONVERTED_SUFFIXES:
            try:
                text = convert(file.path)
            except UnreadableError as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(file, exc.reason)
                continue
            yield Record(key=file.key, text=text, reference=None, source=str(file.path))
        elif suffix == ".jsonl":
            yield from _jsonl(file.path)
        elif suffix == ".csv":
            yield from _csv(file.path, text_column)
        else:
            yield _text_file(file)


def _text_file(file: InputFile) -> Record:
    path = file.path
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}:{_line_at(path, exc.start)}: not UTF-8 text (byte {_byte(exc)})") from None
    if not text.strip():
        raise InputError(f"{path}: empty document")
    found = _UNSTORABLE.search(text)
    if found is not None:
        _check_text(text, f"{path}:{text.count(chr(10), 0, found.start()) + 1}", "text")
    return Record(key=file.key, text=text, reference=None, source=str(path))


def _jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{where}: not UTF-8 text (byte {_byte(exc)})") from None
            try:
                item = json.loads(line, parse_constant=_no_constant)
                if not isinstance(item, dict):
                    raise InputError(f"{where}: each line must be a JSON object")
                record = _record(item, where)
            except InputError:
                raise
            except ValueError as exc:  # json.JSONDecodeError, or NaN/Infinity
                raise InputError(f"{where}: invalid JSON: {exc}") from None
            except RecursionError:
                # json's parser (and the checks of every value after it) recurse once per level: a
                # line of `[[[[...` deeper than the interpreter's stack is a limit, not a traceback.
                raise InputError(f"{where}: JSON nested too deeply to read") from None
            yield record


def _no_constant(name: str) -> object:
    # json.loads accepts NaN and Infinity, which are not JSON and which Postgres jsonb refuses.
    raise ValueError(f"{name} is not a JSON value")


def _csv(path: Path, text_column: str) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)  # long documents are the point, not an error
    # utf-8-sig: spreadsheets start their CSV with a byte order mark. surrogateescape: a byte that is
    # not UTF-8 becomes a stand-in character, found below with the line it is on.
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or text_column not in header:
                raise InputError(f"{path}:1: no {text_column!r} column (columns: {header})")
            _check_csv_row(header, f"{path}:1", "the header")
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise InputError(f"{path}:1: column(s) {repeated} appear more than once in the header")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise InputError(
                        f"{where}: row has {len(row)} fields, the header has {len(header)} "
                        "(an unquoted comma or quote in the text?)"
                    )
                _check_csv_row(row, where, "the row")
                item: dict[str, Any] = dict(zip(header, row, strict=True))
                item["text"] = item.pop(text_column)
                item.setdefault("id", f"row-{reader.line_num}")
                if item.get("reference") == "":
                    item["reference"] = None
                yield _record(item, where)
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None


def _check_csv_row(values: list[str], where: str, what: str) -> None:
    for value in values:
        escaped = _ESCAPED_BYTE.search(value)
        if escaped:
            raise InputError(
                f"{where}: not UTF-8 text (byte 0x{ord(escaped.group()) - 0xDC00:02x} in {what})"
            )


# What errors="surrogateescape" turns an undecodable byte 0xNN into: U+DCNN.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check_text(value: str, where: str, what: str) -> None:
    """Refuse a character Postgres or UTF-8 cannot hold, naming where it is."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return
    char = found.group()
    if char == "\x00":
        raise InputError(f"{where}: {what} contains a NUL character (U+0000)")
    raise InputError(f"{where}: {what} contains an unpaired surrogate \\u{ord(char):04x} (half a character)")


def _check_value(value: Any, where: str, what: str) -> None:
    """`_check_text` on every string in a JSON value, keys included."""
    if isinstance(value, str):
        _check_text(value, where, what)
    elif isinstance(value, dict):
        for key, inner in value.items():
            _check_text(str(key), where, f"{what} key {str(key)!r}")
            _check_value(inner, where, f"{what}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_value(inner, where, f"{what}[{index}]")


def _byte(exc: UnicodeDecodeError) -> str:
    return f"0x{exc.object[exc.start]:02x}"


def _line_at(path: Path, offset: int) -> int:
    with path.open("rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _record(item: dict[str, Any], where: str) -> Record:
    for name, value in item.items():
        _check_text(name, where, f"field name {name!r}")
        _check_value(value, where, name if name in RESERVED else f"field {name!r}")
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

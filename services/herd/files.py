"""Files Herd writes for people (exports, reports, plots, generated herd files): whole or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from herd.errors import UserError


class OutputPathError(UserError, ValueError):
    """An output path that cannot be written: its folder is missing, or it names a folder."""


def check_output_path(path: Path) -> None:
    """Raise OutputPathError (one line naming `path`) unless a file can be created at `path`.
    Called before any work is done, so a typo in `-o` costs nothing."""
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"{path}: folder {parent} is not writable")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A path beside `path` to write to; renamed over `path` when the block succeeds, removed when
    it raises. A reader never sees half a file, and a failed write leaves the old file in place.

    The temporary name ends in `.partial` in the same folder, so the rename is atomic (same
    filesystem) and an interrupted run leaves a file that says what it is. Raises OutputPathError
    when `path` cannot be written (check_output_path)."""
    check_output_path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    """`atomic_path` opened for UTF-8 text, newline translation off (CSV writes its own line ends)."""
    with atomic_path(path) as partial, partial.open("w", encoding="utf-8", newline="") as handle:
        yield handle


@contextlib.contextmanager
def atomic_binary(path: Path) -> Iterator[IO[bytes]]:
    """`atomic_path` opened for bytes (JSONL Herd encodes itself)."""
    with atomic_path(path) as partial, partial.open("wb") as handle:
        yield handle

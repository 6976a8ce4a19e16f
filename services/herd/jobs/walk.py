"""File-system walks for `herd submit`: folders and globs that end, and each real file once.

A document tree may hold symbolic links back into itself (`current -> .`, `latest -> ..`, backup and
sync tools, home folders linked into themselves). Python's `glob.glob(..., recursive=True)` follows
them: one such link lists every document 41 times (until the kernel's ELOOP), two make the number of
paths grow as 2^40 and the walk never ends (https://github.com/python/cpython/issues/88041). So:

- Below the folder a walk starts from, a link to a folder is **not** followed, for a folder argument
  (as `Path.rglob` and `find` do) and for a glob alike. A linked folder is read when it is given
  itself (`herd submit docs/current`), or its literal part of a glob (`docs/current/*.txt`).
- A link to a file is read, but every file is visited once, by its identity (device and inode), over
  all the arguments of one submit: `docs/a.txt` reached as `docs/a.txt`, `docs/latest.txt -> a.txt`,
  through a hard link or by a second argument gives one document, keyed by the first spelling met
  (arguments in order, each one's files sorted).

Glob syntax is `glob.glob`'s: `*`, `?`, `[...]` within one path part, `**` as a whole part for any
number of folders, and a wildcard does not match a name starting with `.` unless the pattern's part
does.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path


def folder_files(folder: Path) -> list[Path]:
    """Regular files under `folder` (links to files included), sorted; links to folders below it not
    followed."""
    return sorted(Path(path) for path in _walk(str(folder), max_depth=None, hidden=True))


def glob_files(pattern: str) -> list[Path]:
    """Regular files whose path matches `pattern` (glob syntax, see the module docstring), sorted; no
    link to a folder below the pattern's literal leading folder is followed."""
    top, parts = split_pattern(pattern)
    depth = None if "**" in parts else len(parts)
    # A hidden folder can match only a pattern part that starts with "." (not even `**`).
    hidden = any(part.startswith(".") for part in parts)
    prefix = top if top else ""
    found: list[Path] = []
    for path in _walk(top or ".", max_depth=depth, hidden=hidden):
        relative = os.path.relpath(path, top or ".").split(os.sep)
        if _match(tuple(parts), tuple(relative)):
            found.append(Path(os.path.join(prefix, *relative)) if prefix else Path(*relative))
    return sorted(found)


def split_pattern(pattern: str) -> tuple[str, list[str]]:
    """(the leading folder without wildcards, as spelled; the parts after it): `docs/**/*.txt` gives
    ("docs", ["**", "*.txt"]), `*.txt` gives ("", ["*.txt"]), `/a/*/b` gives ("/a", ["*", "b"])."""
    parts = pattern.split(os.sep)
    literal: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        literal.append(part)
    rest = [part for part in parts[len(literal) :] if part]
    top = os.sep.join(literal)
    if pattern.startswith(os.sep) and not top:
        top = os.sep
    return top, rest


def identity(path: Path) -> tuple[int, int]:
    """The file `path` names, links followed: (device, inode). Raises OSError if it cannot be read."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _walk(top: str, max_depth: int | None, hidden: bool) -> Iterator[str]:
    """Paths of the regular files under `top` (`top` itself may be a link), at most `max_depth` parts
    below it, hidden folders (`.name`) entered only if `hidden`; links to folders below `top` are
    listed by os.walk among the folders but not entered (followlinks=False), so no walk can loop."""
    for root, dirs, files in os.walk(top, followlinks=False):
        depth = 0 if root == top else os.path.relpath(root, top).count(os.sep) + 1
        if max_depth is not None and depth + 1 >= max_depth:
            dirs[:] = []  # the next level holds the last part: only its files can match
        elif not hidden:
            dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            path = os.path.join(root, name)
            if os.path.isfile(path):  # a link to a file counts; a dangling link or a socket does not
                yield path


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        # Zero or more folders, none hidden (as glob.glob's `**`), then the rest of the pattern.
        for skip in range(len(parts) + 1):
            if skip and parts[skip - 1].startswith("."):
                return False
            if _match(rest, parts[skip:]):
                return True
        return False
    if not parts or not _part(head, parts[0]):
        return False
    return _match(rest, parts[1:])


def _part(pattern: str, name: str) -> bool:
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)

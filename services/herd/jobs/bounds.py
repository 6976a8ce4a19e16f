"""Resource bounds for the document converters (herd/jobs/converters.py): a hostile or huge file costs
one `file: reason` line, never a traceback, a full memory or a submit that never ends.

What each bound stops (defaults in herd/settings.py, `HERD_CONVERT_*`):

- **size** (`max_file_bytes`, 256 MiB): a file is not opened when it is larger; HTML and PDF
  parsers hold the whole file in memory.
- **expanded size** (`max_expanded_bytes`, 256 MiB) and **ratio** (`max_ratio`, 100): what a
  compressed file inflates to. A DOCX is a ZIP archive: its members' declared sizes are summed before
  anything is inflated (Python's zipfile never inflates past a member's declared size, and a member
  whose data disagrees fails its CRC), so a 40 KB "zip bomb" that inflates to 4 GB is refused
  unread. A PDF's streams are inflated one at a time by pypdf, which stops each at its own limit
  (75 MB, `pypdf.filters.ZLIB_MAX_OUTPUT_LENGTH`, https://github.com/py-pdf/pypdf/pull/3430); the text
  extracted from all pages is bounded by `max_expanded_bytes` too. The ratio applies only past
  `RATIO_FLOOR` expanded bytes: small XML compresses far past 100:1 and harms nobody.
- **pages** (`max_pages`, 10,000): a PDF with more pages is refused before any is read.
- **time** (`timeout_s`, 120 s per file): malformed files have made parsers loop
  (https://github.com/py-pdf/pypdf/issues/329); a conversion still running is stopped. The timer is
  SIGALRM, so it applies where `herd submit` converts, in a process's main thread (elsewhere a
  conversion runs unbounded in time; every other bound still holds).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from herd.errors import UserError
from herd.settings import get_settings

# Below this many expanded bytes the ratio is not checked (a 1 MB XML part at 200:1 is harmless).
RATIO_FLOOR = 16 * 1024 * 1024
# A DOCX has a few dozen parts; an archive of more is not a document.
MAX_ARCHIVE_MEMBERS = 10_000


class LimitExceededError(UserError):
    """A bound was passed: `str(error)` is the reason, without the file (the converter adds it)."""


class ConversionTimeoutError(LimitExceededError):
    pass


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 256 * 1024 * 1024
    max_expanded_bytes: int = 256 * 1024 * 1024
    max_ratio: float = 100.0
    max_pages: int = 10_000
    timeout_s: float = 120.0

    @classmethod
    def from_settings(cls) -> Limits:
        s = get_settings()
        return cls(
            max_file_bytes=s.convert_max_file_bytes,
            max_expanded_bytes=s.convert_max_expanded_bytes,
            max_ratio=s.convert_max_ratio,
            max_pages=s.convert_max_pages,
            timeout_s=s.convert_timeout_s,
        )


def check_size(path: Path, limits: Limits) -> None:
    """Raise LimitExceededError if `path` is larger than `limits.max_file_bytes`. OSError if unreadable."""
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise LimitExceededError(
            f"file of {_mb(size)} is over the limit of {_mb(limits.max_file_bytes)} "
            "(HERD_CONVERT_MAX_FILE_BYTES)"
        )


def check_archive(path: Path, limits: Limits) -> None:
    """Refuse a ZIP archive (DOCX) whose members would inflate past the bounds, from its directory
    alone. Raises LimitExceededError; zipfile.BadZipFile for a file that is no archive."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise LimitExceededError(f"archive of {len(members)} members (at most {MAX_ARCHIVE_MEMBERS})")
    expanded = sum(member.file_size for member in members)
    packed = max(sum(member.compress_size for member in members), 1)
    check_expanded(expanded, packed, limits, "archive")


def check_expanded(expanded: int, packed: int, limits: Limits, what: str) -> None:
    """Raise LimitExceededError if `expanded` bytes (from `packed` on disk) pass the size or ratio bound."""
    if expanded > limits.max_expanded_bytes:
        raise LimitExceededError(
            f"{what} inflates to {_mb(expanded)}, over the limit of {_mb(limits.max_expanded_bytes)} "
            "(HERD_CONVERT_MAX_EXPANDED_BYTES): a decompression bomb?"
        )
    if expanded > RATIO_FLOOR and expanded / packed > limits.max_ratio:
        raise LimitExceededError(
            f"{what} inflates {expanded / packed:.0f} times ({_mb(packed)} to {_mb(expanded)}), over "
            f"the limit of {limits.max_ratio:.0f} (HERD_CONVERT_MAX_RATIO): a decompression bomb?"
        )


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ConversionTimeoutError in the block once it has run `seconds` (wall time). Only in the
    main thread (SIGALRM); elsewhere, or with `seconds <= 0`, the block runs unbounded."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    expired = False

    def expire(signum: int, frame: object) -> None:
        nonlocal expired
        expired = True
        raise ConversionTimeoutError(f"still converting after {seconds:g} s (HERD_CONVERT_TIMEOUT_S)")

    previous = signal.signal(signal.SIGALRM, expire)
    # Then again every half second: a parser's own `except Exception` may swallow the first one.
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:  # swallowed, and the block ended anyway: its result is not to be trusted
        raise ConversionTimeoutError(f"still converting after {seconds:g} s (HERD_CONVERT_TIMEOUT_S)")


def _mb(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{size:.0f} bytes"

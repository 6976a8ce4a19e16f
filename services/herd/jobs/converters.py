"""PDF, DOCX and HTML documents as plain text, for `herd submit` (herd/jobs/documents.py).

Libraries, chosen by install weight and by the text they gave on files made like the tests' ones
(tests/support/docfiles.py; figures in docs/documents.md, measured when this was written):

- PDF: **pypdf**, pure Python, no dependency (5 MB installed). On a generated 100-page PDF it gave
  the exact text (every word, in reading order) at 23 pages/s, and it reads RC4-encrypted files
  without a crypto library. pdfminer.six gave the same text at 3 pages/s and installs 28 MB in 5
  packages (`cryptography`, `cffi`, ...); its better layout analysis (columns) did not pay for that
  here. markitdown wraps pdfminer, mammoth and more for formats Herd does not read.
- DOCX: **python-docx** (needs lxml): paragraphs and tables in document order; the only well-kept
  pure reader of the format.
- HTML: **readability-lxml** (Mozilla Readability's algorithm on lxml): on a page with navigation, a
  cookie banner, a sidebar of links, scripts and a footer it kept every article paragraph and the
  title and dropped all 13 clutter phrases, as trafilatura did; but trafilatura installs 70 MB in 17
  packages (dateparser, babel, regex, pytz, ...) against 15 MB in 5 for readability-lxml, whose lxml
  python-docx needs anyway. BeautifulSoup's plain text leaked 12 of the 13 clutter phrases; a tag
  heuristic (drop nav/header/footer/aside) works only on sites that use those tags. When
  readability finds no main text (a fragment, a page that is one table), the page's whole visible
  text is used rather than nothing.

Every failure is an `UnreadableError` naming the file and one reason (encrypted, no text layer,
corrupt archive, a bound passed); `herd submit --skip-unreadable` records it and goes on. Every
conversion runs under the bounds of herd/jobs/bounds.py (size, inflated size and ratio, pages, time),
and whatever a parser raises on a malformed file (its own errors, a RecursionError on deep nesting, a
MemoryError) becomes that one line too: one hostile file in a folder of thousands must not stop the
submit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from herd.input_errors import InputError
from herd.jobs import bounds
from herd.jobs.bounds import LimitExceededError, Limits


class UnreadableError(InputError):
    """A file Herd cannot turn into text: `str(error)` is `file: reason`; `reason` alone is kept too."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def pdf_text(path: Path, limits: Limits | None = None) -> str:
    """The text layer of every page, pages separated by a blank line (a paragraph boundary for the
    chunker). Raises UnreadableError: encrypted with a password, no text layer, not a PDF, a bound
    passed (pages, a stream past pypdf's inflate limit, more text than `max_expanded_bytes`)."""
    from pypdf import PdfReader  # noqa: PLC0415 - pypdf loads only for a PDF
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError  # noqa: PLC0415 - pypdf loads only for a PDF

    limits = limits or Limits()
    # pypdf logs what it repairs ("EOF marker not found") at WARNING, which Python's last-resort
    # handler prints above our one error line; what matters reaches the user as UnreadableError.
    quiet = logging.getLogger("pypdf")
    if quiet.level == logging.NOTSET:  # unless configured explicitly
        quiet.setLevel(logging.ERROR)
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password (only printing or copying is
            # restricted): they open without one, as in any viewer.
            try:
                opened = reader.decrypt("")
            except DependencyError:
                raise UnreadableError(path, "encrypted PDF (AES): decrypt it first") from None
            if not opened:
                raise UnreadableError(path, "encrypted PDF: it needs a password (decrypt it first)")
        count = len(reader.pages)
        if count > limits.max_pages:
            raise LimitExceededError(
                f"PDF of {count} pages, over the limit of {limits.max_pages} (HERD_CONVERT_MAX_PAGES)"
            )
        pages: list[str] = []
        size, packed = 0, path.stat().st_size
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            size += len(pages[-1])
            bounds.check_expanded(size, packed, limits, "its text")
    except (UnreadableError, LimitExceededError):
        raise
    except FileNotDecryptedError:
        raise UnreadableError(path, "encrypted PDF: it needs a password (decrypt it first)") from None
    except LimitReachedError:
        # pypdf's own bound on one stream's inflated size (a decompression bomb, or a huge drawing).
        reason = "not a readable PDF (a stream inflates past pypdf's limit of 75 MB)"
        raise UnreadableError(path, reason) from None
    except Exception as exc:  # noqa: BLE001 - on malformed files pypdf raises ValueError, KeyError, ... too
        raise UnreadableError(path, f"not a readable PDF ({_first_line(exc)})") from None
    if not pages:
        raise UnreadableError(path, "PDF has no pages")
    text = "\n\n".join(page.strip() for page in pages)
    if not text.strip():
        raise UnreadableError(path, f"PDF has no text layer ({len(pages)} page(s) of images?): OCR it first")
    return text


def docx_text(path: Path, limits: Limits | None = None) -> str:
    """Paragraphs and tables (a row per line, cells separated by ` | `) in document order. The archive's
    directory is checked against the inflate bounds before any member is read (herd/jobs/bounds.py)."""
    from docx import Document  # noqa: PLC0415 - python-docx loads only for a DOCX
    from docx.table import Table  # noqa: PLC0415 - python-docx loads only for a DOCX

    try:
        bounds.check_archive(path, limits or Limits())
        document = Document(str(path))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                blocks.extend(" | ".join(cell.text.strip() for cell in row.cells) for row in item.rows)
            elif item.text.strip():
                blocks.append(item.text.strip())
    except LimitExceededError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, lxml and python-docx each raise their own
        raise UnreadableError(path, f"not a readable DOCX (corrupt archive?) ({_first_line(exc)})") from None
    text = "\n\n".join(blocks)
    if not text.strip():
        raise UnreadableError(path, "DOCX has no text")
    return text


def html_text(path: Path, limits: Limits | None = None) -> str:
    """The page's title and main text (readability-lxml), one paragraph per block element; the page's
    whole visible text when readability finds no main text (a fragment, a page that is one table)."""
    import lxml.html  # noqa: PLC0415 - lxml and readability load only for HTML
    from readability import Document  # noqa: PLC0415 - lxml and readability load only for HTML

    raw = path.read_bytes()
    try:
        document = Document(raw)
        title = (document.short_title() or "").strip()
        main = _blocks(lxml.html.fromstring(document.summary(html_partial=True)))
        if len(" ".join(main)) < 200:  # no article found: better all the text than a stub
            page = lxml.html.fromstring(raw)
            for junk in page.xpath("//script|//style|//noscript|//template"):
                junk.drop_tree()
            main = _blocks(page)
    except LimitExceededError:
        raise
    except Exception as exc:  # noqa: BLE001 - lxml's and readability's parse errors vary by version
        raise UnreadableError(path, f"not readable HTML ({_first_line(exc)})") from None
    if title and (not main or title not in main[0]):
        main.insert(0, title)
    text = "\n\n".join(main)
    if not text.strip():
        raise UnreadableError(path, "HTML page has no text")
    return text


_BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "blockquote", "td", "th", "dt", "dd")


def _blocks(root: Any) -> list[str]:
    """Text of the innermost block elements in order (a paragraph boundary between each)."""
    found = [" ".join(el.text_content().split()) for el in root.iter(*_BLOCKS) if not _has_block(el)]
    found = [text for text in found if text]
    return found or [" ".join(root.text_content().split())]


def _has_block(element: Any) -> bool:
    return any(child.tag in _BLOCKS for child in element.iterdescendants())


CONVERTERS: dict[str, Callable[[Path, Limits], str]] = {
    ".pdf": pdf_text,
    ".docx": docx_text,
    ".html": html_text,
    ".htm": html_text,
}

# What Postgres and UTF-8 cannot hold: a converter's artefact (a PDF's font without a Unicode map
# gives NULs), never the author's text, so it is dropped rather than refusing the whole file.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def convert(path: Path, limits: Limits | None = None) -> str:
    """`path`'s text by its suffix; UnreadableError for a file that gives none or passes a bound of
    `limits` (default: the HERD_CONVERT_* settings, herd/jobs/bounds.py)."""
    limits = limits or Limits.from_settings()
    try:
        bounds.check_size(path, limits)
        with bounds.deadline(limits.timeout_s):
            text = CONVERTERS[path.suffix.lower()](path, limits)
    except UnreadableError:
        raise
    except LimitExceededError as exc:
        raise UnreadableError(path, str(exc)) from None
    except OSError as exc:
        raise UnreadableError(path, f"cannot read the file ({exc.strerror or exc})") from None
    except RecursionError:  # nesting deeper than the interpreter's stack (crafted, or corrupt)
        raise UnreadableError(path, "nested too deeply to read") from None
    except MemoryError:
        raise UnreadableError(path, "too large to convert in the memory available") from None
    return _UNSTORABLE.sub("", text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__

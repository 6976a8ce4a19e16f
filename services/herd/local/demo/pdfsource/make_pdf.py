"""Makes the demo's PDF, `data/long/laptop.pdf`, from `laptop.txt` beside this script.

A PDF with a real text layer (Helvetica 11 pt, lines wrapped at 85 characters, 52 lines a page), as
a word processor's "export as PDF" gives, so `herd submit` reads it with pypdf like any user's PDF.
Written by hand with the standard library so the file is reproducible byte for byte:
`python services/herd/local/demo/pdfsource/make_pdf.py`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "laptop.txt"
TARGET = HERE.parent / "data" / "long" / "laptop.pdf"
LINES_PER_PAGE = 52


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pages(text: str) -> list[list[str]]:
    """The text's paragraphs wrapped into lines, a blank line between paragraphs, cut into pages."""
    lines: list[str] = []
    for paragraph in text.strip().split("\n\n"):
        lines += textwrap.wrap(" ".join(paragraph.split()), 85, break_on_hyphens=False) + [""]
    return [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)]


def pdf(text: str) -> bytes:
    """A PDF 1.4 file: one page per `pages` entry, each line shown with the ' operator."""
    laid_out = pages(text)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (" ".join(f"{4 + 2 * i} 0 R" for i in range(len(laid_out))).encode(), len(laid_out)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for lines in laid_out:
        ops = ["BT /F1 11 Tf 14 TL 56 790 Td", *(f"({_escape(line)}) '" for line in lines), "ET"]
        stream = "\n".join(ops).encode("cp1252")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (len(objects) + 2)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


if __name__ == "__main__":
    TARGET.write_bytes(pdf(SOURCE.read_text(encoding="utf-8")))
    print(f"{TARGET}: {len(pages(SOURCE.read_text(encoding='utf-8')))} pages")

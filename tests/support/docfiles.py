"""Real document files made in a test: PDF (with a text layer, without one, encrypted, corrupt), DOCX,
HTML with navigation clutter and long plain text. Made from scratch, so no fixture files and no
PDF-writing dependency: the PDF writer below emits the few objects a one-font text PDF needs."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

WORDS = (
    "contract party agreement term payment notice delivery service clause period renewal invoice "
    "report quarter revenue growth customer market product review engineer schedule risk audit "
    "policy data record system account budget office region supplier quality warranty damage"
).split()


def sentences(count: int, seed: int = 0, topic: str = "") -> list[str]:
    """`count` plain English-like sentences of 8-20 words (about 14 words each), reproducible."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
        if topic and i % 7 == 0:
            words[len(words) // 2] = topic
        out.append(" ".join(words).capitalize() + ".")
    return out


def long_text(words: int, seed: int = 0, topic: str = "") -> str:
    """About `words` words in paragraphs of 5-9 sentences separated by blank lines."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    total = 0
    pool = iter(sentences(words, seed, topic))
    while total < words:
        paragraph = [next(pool) for _ in range(rng.randint(5, 9))]
        total += sum(len(s.split()) for s in paragraph)
        paragraphs.append(" ".join(paragraph))
    return "\n\n".join(paragraphs) + "\n"


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: list[str]) -> bytes:
    """A PDF with one page per string, its text laid out in Helvetica 10pt lines (ASCII text).
    An empty string gives a page with no text at all, as a scanned page without OCR has."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for text in pages:
        lines: list[str] = []
        for paragraph in text.split("\n\n"):
            lines.extend(textwrap.wrap(paragraph, 95) or [""])
            lines.append("")
        ops = ["BT /F1 10 Tf 12 TL 50 780 Td", *(f"({_escape(line)}) '" for line in lines[:62]), "ET"]
        # No text: a grey rectangle stands in for the scanned image.
        stream = "\n".join(ops).encode("latin-1") if text else b"0.9 g 50 50 500 700 re f"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {len(objects) + 2} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return assemble_pdf(objects)


def assemble_pdf(objects: list[bytes]) -> bytes:
    """A PDF file of `objects` (numbered from 1, the first the catalog), with its cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write_pdf(path: Path, pages: list[str]) -> Path:
    path.write_bytes(pdf_bytes(pages))
    return path


def write_encrypted_pdf(path: Path, pages: list[str], password: str = "s3cret") -> Path:
    """The same PDF, encrypted with a user password (RC4-128: pypdf needs no crypto library for it)."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def write_docx(path: Path, title: str, paragraphs: list[str]) -> Path:
    from docx import Document

    document = Document()
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Party", "Amount"
    table.cell(1, 0).text, table.cell(1, 1).text = "Acme Supplies", "1200 EUR"
    document.save(str(path))
    return path


NAV_CLUTTER = ("Home", "Products", "Pricing", "Blog", "Careers", "Sign in", "Subscribe to our newsletter")


def html_page(title: str, paragraphs: list[str]) -> str:
    """An article page as sites serve it: navigation, a cookie banner, a sidebar of links, scripts,
    styles and a footer around the article's paragraphs."""
    nav = "".join(f'<li><a href="/{item.lower()}">{item}</a></li>' for item in NAV_CLUTTER)
    related = "".join(
        f'<li><a href="/post/{i}">Related story number {i} you may like</a></li>' for i in range(8)
    )
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!doctype html>
<html><head><title>{title} | Example News</title>
<style>body {{ font-family: sans-serif }} .nav li {{ display: inline }}</style>
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments)}}</script>
</head><body>
<div id="cookie-banner" class="cookie consent">We use cookies to improve your experience.
Accept all cookies</div>
<header class="site-header"><nav class="nav"><ul>{nav}</ul></nav></header>
<div class="layout">
<aside class="sidebar"><h3>Trending now</h3><ul>{related}</ul></aside>
<main><article><h1>{title}</h1>{body}</article></main>
</div>
<footer class="site-footer"><p>Copyright 2026 Example News. All rights reserved.</p>
<ul><li><a href="/privacy">Privacy policy</a></li><li><a href="/terms">Terms of use</a></li></ul></footer>
<script>gtag('js', new Date()); gtag('config', 'UA-000000');</script>
</body></html>
"""

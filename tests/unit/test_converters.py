"""PDF, DOCX and HTML in (herd/jobs/converters.py), on files made here; the splitter's boundaries."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from herd.cascade import splitting
from herd.input_errors import InputError
from herd.jobs import documents
from herd.jobs.converters import UnreadableError
from herd.jobs.skipped import Collector
from tests.support import docfiles


def test_pdf_with_a_text_layer_reads_every_page_in_order(tmp_path: Path) -> None:
    pages = [docfiles.long_text(300, seed=i) for i in range(3)]
    pdf = docfiles.write_pdf(tmp_path / "report.pdf", pages)
    (record,) = documents.read(documents.expand([str(pdf)]))
    assert " ".join(record.text.split()) == " ".join(" ".join(pages).split())
    assert record.key == "report.pdf" or record.key.endswith("/report.pdf")
    assert record.text.count("\n\n") >= 2  # pages stay paragraph boundaries


def test_unreadable_files_get_one_file_reason_line(tmp_path: Path) -> None:
    encrypted = docfiles.write_encrypted_pdf(tmp_path / "locked.pdf", ["secret terms"])
    scanned = docfiles.write_pdf(tmp_path / "scan.pdf", ["", ""])
    corrupt = tmp_path / "broken.docx"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip archive")
    not_pdf = tmp_path / "fake.pdf"
    not_pdf.write_text("hello")
    expected = {
        encrypted: "encrypted PDF: it needs a password",
        scanned: "PDF has no text layer (2 page(s) of images?): OCR it first",
        corrupt: "not a readable DOCX (corrupt archive?)",
        not_pdf: "not a readable PDF",
    }
    for path, reason in expected.items():
        with pytest.raises(UnreadableError) as caught:
            list(documents.read([path]))
        assert str(caught.value).startswith(f"{path}: {reason}")
        assert "\n" not in str(caught.value) and isinstance(caught.value, InputError)


def test_a_pdf_encrypted_with_an_empty_password_opens(tmp_path: Path) -> None:
    pdf = docfiles.write_encrypted_pdf(tmp_path / "restricted.pdf", ["printing is restricted"], password="")
    (record,) = documents.read([pdf])
    assert "printing is restricted" in record.text


def test_docx_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    doc = docfiles.write_docx(
        tmp_path / "contract.docx", "Supply contract", ["First clause.", "Second clause."]
    )
    (record,) = documents.read([doc])
    assert record.text.split("\n\n") == [
        "Supply contract",
        "First clause.",
        "Second clause.",
        "Party | Amount",
        "Acme Supplies | 1200 EUR",
    ]


def test_html_keeps_the_article_and_drops_the_clutter(tmp_path: Path) -> None:
    paragraphs = [" ".join(docfiles.sentences(5, seed=i)) for i in range(6)]
    page = tmp_path / "news.html"
    page.write_text(docfiles.html_page("Quarterly supplier audit", paragraphs))
    (record,) = documents.read([page])
    assert record.text.startswith("Quarterly supplier audit")
    for paragraph in paragraphs:
        assert paragraph in record.text
    for clutter in (*docfiles.NAV_CLUTTER, "Related story", "cookies", "Privacy policy", "dataLayer"):
        assert clutter not in record.text


def test_skip_unreadable_goes_on_and_keys_stay_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    docfiles.write_pdf(folder / "a.pdf", ["alpha text"])
    docfiles.write_encrypted_pdf(folder / "b.pdf", ["beta"])
    (folder / "c.html").write_text(docfiles.html_page("Gamma", ["gamma " * 60]))
    skipped = Collector()
    records = list(documents.read(documents.expand([str(folder)]), on_unreadable=skipped))
    assert [r.key for r in records] == ["docs/a.pdf", "docs/c.html"]
    assert [(s.doc_key, s.reason) for s in skipped] == [
        ("docs/b.pdf", "encrypted PDF: it needs a password (decrypt it first)")
    ]
    monkeypatch.chdir(folder)
    spellings = [".", str(folder) + "/", os.path.relpath(folder, tmp_path)]
    monkeypatch.chdir(tmp_path)
    for spelling in [*spellings[1:], "docs/*.pdf"]:
        keys = [f.key for f in documents.expand([spelling])]
        assert "docs/a.pdf" in keys
    monkeypatch.chdir(folder)
    assert "docs/a.pdf" in [f.key for f in documents.expand(["."])]


def test_chunks_cover_the_text_on_boundaries_with_overlap() -> None:
    text = docfiles.long_text(20_000)
    chunks = splitting.chunk(text, 4000, 400)
    assert all(len(c) <= 4000 for c in chunks) and 35 <= len(chunks) <= 60
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    joined = " ".join(" ".join(c.split()) for c in chunks)
    assert all(s in joined for s in sentences)  # nothing lost
    assert all(c.endswith(".") for c in chunks)  # cut at sentence ends
    for before, after in zip(chunks, chunks[1:], strict=False):
        first = re.split(r"(?<=[.!?])\s+", after)[0]
        assert first in before  # each chunk starts with the end of the one before


def test_truncation_keeps_head_or_head_and_tail_on_boundaries() -> None:
    text = docfiles.long_text(2000)
    head = splitting.head(text, 1000)
    assert len(head) <= 1000 and text.startswith(head) and head.endswith(".")
    both = splitting.head_tail(text, 1000)
    start, end = both.split(splitting.ELISION)
    assert len(both) <= 1000 and text.startswith(start) and text.rstrip().endswith(end.rstrip())

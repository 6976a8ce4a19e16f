"""Hostile and huge files are bounded (herd/jobs/bounds.py): each converter refuses a decompression
bomb, a file past a bound, a parser that loops or recurses, with one `file: reason` line that
`--skip-unreadable` skips; and file-system walks (herd/jobs/walk.py) end on link loops and visit each
real file once."""

from __future__ import annotations

import glob
import os
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from herd.jobs import converters, documents, walk
from herd.jobs.bounds import Limits
from herd.jobs.converters import UnreadableError
from herd.jobs.skipped import Collector
from tests.support import docfiles

MB = 1024 * 1024


def bomb_pdf(path: Path, inflated_mb: int) -> Path:
    """A one-page PDF whose content stream (a line of text, then spaces) inflates to `inflated_mb` MB
    from a few hundred KB on disk: a decompression bomb, or a huge vector drawing."""
    z = zlib.compressobj(6)
    body = z.compress(b"BT /F1 12 Tf 72 712 Td (Quarterly report: revenue grew.) Tj ET\n")
    for _ in range(inflated_mb):
        body += z.compress(b" " * MB)
    body += z.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    path.write_bytes(docfiles.assemble_pdf(objects))
    return path


def bomb_docx(path: Path, inflated_mb: int) -> Path:
    """A real DOCX with one more member of `inflated_mb` MB of zeros (a ZIP bomb inside the archive)."""
    docfiles.write_docx(path, "Supply contract", ["First clause."])
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("word/media/image1.bin", "w", force_zip64=True) as member:
            for _ in range(inflated_mb):
                member.write(bytes(MB))
    return path


def refusal(path: Path, limits: Limits | None = None) -> str:
    with pytest.raises(UnreadableError) as caught:
        converters.convert(path, limits or Limits())
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return caught.value.reason


def test_a_pdf_stream_past_pypdfs_inflate_limit_is_one_line_and_skippable(tmp_path: Path) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    docfiles.write_pdf(folder / "a-normal.pdf", ["the normal report"])
    bomb = bomb_pdf(folder / "b-drawing.pdf", 80)
    assert bomb.stat().st_size < MB
    assert refusal(bomb) == "not a readable PDF (a stream inflates past pypdf's limit of 75 MB)"
    skipped = Collector()
    records = list(documents.read(documents.expand([str(folder)]), on_unreadable=skipped))
    assert [r.key for r in records] == ["pdfs/a-normal.pdf"]
    assert [(s.doc_key, s.reason) for s in skipped] == [
        ("pdfs/b-drawing.pdf", "not a readable PDF (a stream inflates past pypdf's limit of 75 MB)")
    ]


def test_pdf_pages_and_extracted_text_are_bounded(tmp_path: Path) -> None:
    pdf = docfiles.write_pdf(tmp_path / "three.pdf", [docfiles.long_text(300, seed=i) for i in range(3)])
    assert "PDF of 3 pages, over the limit of 2" in refusal(pdf, Limits(max_pages=2))
    assert refusal(pdf, Limits(max_expanded_bytes=1000)).startswith("its text inflates to")
    assert converters.convert(pdf, Limits(max_pages=3)).count("\n\n") >= 2


def test_a_docx_zip_bomb_is_refused_before_anything_is_inflated(tmp_path: Path) -> None:
    bomb = bomb_docx(tmp_path / "contract.docx", 300)
    assert bomb.stat().st_size < 2 * MB
    started = time.monotonic()
    reason = refusal(bomb)
    assert reason.startswith("archive inflates to 300.") and "over the limit of 256.0 MB" in reason
    # Under the size bound but compressed 1000:1: the ratio bound refuses it.
    ratio = refusal(bomb, Limits(max_expanded_bytes=1024 * MB))
    assert "inflates" in ratio and "times" in ratio and "HERD_CONVERT_MAX_RATIO" in ratio
    assert time.monotonic() - started < 30  # refused from the archive's directory, not by inflating
    # The same document without the bomb reads; a small zeros member (under the ratio floor) is harmless.
    small = bomb_docx(tmp_path / "small.docx", 2)
    assert converters.convert(small, Limits()).startswith("Supply contract")


def test_every_converted_format_is_bounded_by_size(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(docfiles.html_page("Title", ["words " * 400]))
    pdf = docfiles.write_pdf(tmp_path / "r.pdf", ["some text"])
    doc = docfiles.write_docx(tmp_path / "d.docx", "Title", ["text"])
    for path in (page, pdf, doc):
        reason = refusal(path, Limits(max_file_bytes=100))
        assert reason.startswith("file of ") and "over the limit of 100 bytes" in reason


def test_a_converter_that_loops_or_recurses_is_stopped_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "page.html"
    page.write_text(docfiles.html_page("Title", ["words " * 100]))

    def loops(path: Path, limits: Limits) -> str:
        while True:
            time.sleep(0.05)

    def swallows(path: Path, limits: Limits) -> str:
        # A parser whose own `except Exception` swallows the first timeout and "recovers" (pypdf scans
        # a broken file again) must still be stopped.
        try:
            loops(path, limits)
        except Exception:  # noqa: BLE001 - the parser under test swallows everything
            pass
        loops(path, limits)
        return "never"

    def recurses(path: Path, limits: Limits) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    for converter, reason in [
        (loops, "still converting after 1 s (HERD_CONVERT_TIMEOUT_S)"),
        (swallows, "still converting after 1 s (HERD_CONVERT_TIMEOUT_S)"),
        (recurses, "nested too deeply to read"),
    ]:
        monkeypatch.setitem(converters.CONVERTERS, ".html", converter)
        started = time.monotonic()
        assert refusal(page, Limits(timeout_s=1)) == reason
        assert time.monotonic() - started < 20
    monkeypatch.undo()
    assert "words" in converters.convert(page, Limits(timeout_s=1))  # the timer is gone afterwards
    time.sleep(1.5)  # and does not fire later


def test_the_bounds_come_from_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from herd.settings import get_settings

    monkeypatch.setenv("HERD_CONVERT_MAX_FILE_BYTES", "100")
    get_settings.cache_clear()
    try:
        pdf = docfiles.write_pdf(tmp_path / "r.pdf", ["some text"])
        with pytest.raises(UnreadableError, match="over the limit of 100 bytes"):
            list(documents.read([pdf]))
    finally:
        get_settings.cache_clear()


def tree(root: Path) -> Path:
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("first review\n")
    (docs / "sub" / "b.txt").write_text("second review\n")
    return docs


def test_link_loops_are_not_followed_by_folders_or_globs(tmp_path: Path, monkeypatch) -> None:
    docs = tree(tmp_path)
    (docs / "self").symlink_to(".")
    (docs / "sub" / "up").symlink_to("..")
    (docs / "sub" / "loop").symlink_to("loop")  # a link to itself: ELOOP when followed
    monkeypatch.chdir(tmp_path)
    want = ["docs/a.txt", "docs/sub/b.txt"]
    for spelling in (["docs"], ["docs/**/*.txt"], ["docs/**"], [str(docs / "**" / "*")], ["docs/*/*.txt"]):
        started = time.monotonic()
        keys = sorted(f.key for f in documents.expand(spelling))
        assert time.monotonic() - started < 10
        assert keys == (want if spelling != ["docs/*/*.txt"] else ["docs/sub/b.txt"]), spelling
    # A linked folder given itself (or as a glob's literal part) is read, under the link's name.
    (tmp_path / "current").symlink_to(docs)
    assert sorted(f.key for f in documents.expand(["current"])) == ["current/a.txt", "current/sub/b.txt"]
    assert [f.key for f in documents.expand(["current/*.txt"])] == ["current/a.txt"]


def test_each_real_file_is_read_once_whatever_its_paths(tmp_path: Path, monkeypatch) -> None:
    docs = tree(tmp_path)
    (docs / "latest.txt").symlink_to("a.txt")
    os.link(docs / "sub" / "b.txt", docs / "sub" / "b-copy.txt")
    (docs / "dangling.txt").symlink_to("missing.txt")
    monkeypatch.chdir(tmp_path)
    for spelling in (["docs"], ["docs/**/*.txt"], ["docs", "docs/a.txt", "docs/sub/b.txt"], ["docs", "docs"]):
        files = documents.expand(spelling)
        assert len(files) == 2, (spelling, files)
        assert len({walk.identity(f.path) for f in files}) == 2
    # The first spelling met keeps the file: arguments in order, each one's files sorted.
    assert [f.key for f in documents.expand(["docs/a.txt", "docs"])] == ["docs/a.txt", "docs/sub/b-copy.txt"]


def test_globs_match_as_glob_glob_does_on_a_tree_without_links(tmp_path: Path, monkeypatch) -> None:
    docs = tree(tmp_path)
    for name in (".hidden.txt", "sub/.h.md", ".git/c.txt", "sub/deep/er/d.txt", "x.md", "sub/[1].txt"):
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text("text\n")
    monkeypatch.chdir(tmp_path)
    patterns = [
        "docs/*.txt",
        "docs/**/*.txt",
        "docs/**",
        "docs/**/*",
        "docs/.*",
        "docs/**/.*",
        "docs/*/*",
        "docs/?.*",
        "docs/sub/*/*/*.txt",
        "./docs/**/*.md",
        "docs/.git/*",
        "docs/sub/[[]1].txt",
        "*/sub/*.txt",
        str(docs / "**" / "*.txt"),
        "docs/**/er/*",
    ]
    for pattern in patterns:
        expected = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        assert walk.glob_files(pattern) == expected, pattern
    monkeypatch.chdir(docs)
    assert walk.glob_files("*.txt") == sorted(Path(p) for p in glob.glob("*.txt"))

"""Document conversion and chunking throughput on a generated 1,000-page set.

    python -m benchmarks.documents [--pages 1000] [--files 20]

Prints figures only; docs/documents.md has the latest. Makes, in a temporary folder, `--files` PDFs
with a text layer totalling `--pages` pages (about 450 words a page, tests/support/docfiles.py's
writer) and the same text as .txt files. Then measures, in one run on this machine:

1. baseline: reading the .txt files through `herd.jobs.documents.read` (pages/s, MB/s);
2. PDF: the same documents through `read` (pypdf text extraction; pages/s), and the share of the
   words the PDFs gave back;
3. chunking: `herd.cascade.splitting.chunk` over the whole text at a 1,400-token budget (as
   chars at 4 chars/token) with 50 tokens of overlap: pages/s, MB/s and chunks made;
4. truncation: `head_tail` of every document to the same budget (documents/s).

Single process, no database.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._lib.entry import run
from benchmarks._lib.timing import timed
from herd.cascade import splitting
from herd.jobs import documents
from tests.support import docfiles

WORDS_PER_PAGE = 450
CHUNK_CHARS = 1400 * 4
OVERLAP_CHARS = 50 * 4


@dataclass(frozen=True)
class DocumentFigures:
    files: int
    pages: int
    text_mb: float
    made_s: float  # generating the set
    text_read_s: float
    pdf_read_s: float
    words_recovered: float  # words read from the PDFs / words of the text files
    chunk_s: float
    chunks: int
    head_tail_s: float
    documents: int


def measure(folder: Path, pages: int, files: int) -> DocumentFigures:
    per_file = max(1, pages // files)
    pdfs, txts = [], []
    made = time.perf_counter()
    for i in range(files):
        text = [docfiles.long_text(WORDS_PER_PAGE, seed=i * 10_000 + n) for n in range(per_file)]
        pdfs.append(docfiles.write_pdf(folder / f"doc{i:03d}.pdf", text))
        txt = folder / f"doc{i:03d}.txt"
        txt.write_text("\n\n".join(text))
        txts.append(txt)
    made_s = time.perf_counter() - made
    text_read = timed(lambda: list(documents.read(txts)))
    pdf_read = timed(lambda: list(documents.read(pdfs)))
    words = sum(len(r.text.split()) for r in text_read.result)
    recovered = sum(len(r.text.split()) for r in pdf_read.result) / words
    texts = [r.text for r in pdf_read.result]
    chunked = timed(lambda: [splitting.chunk(t, CHUNK_CHARS, OVERLAP_CHARS) for t in texts])
    cut = timed(lambda: [splitting.head_tail(t, CHUNK_CHARS) for t in texts])
    return DocumentFigures(
        files=files,
        pages=per_file * files,
        text_mb=sum(p.stat().st_size for p in txts) / 1e6,
        made_s=made_s,
        text_read_s=text_read.best,
        pdf_read_s=pdf_read.best,
        words_recovered=recovered,
        chunk_s=chunked.best,
        chunks=sum(len(c) for c in chunked.result),
        head_tail_s=cut.best,
        documents=len(texts),
    )


def lines(f: DocumentFigures) -> list[str]:
    pages, mb = f.pages, f.text_mb
    return [
        f"set: {f.files} PDFs, {pages} pages, {mb:.1f} MB of text (made in {f.made_s:.1f}s)",
        f"baseline  .txt read:  {pages / f.text_read_s:10.0f} pages/s  {mb / f.text_read_s:8.1f} MB/s",
        f"PDF       pypdf read: {pages / f.pdf_read_s:10.1f} pages/s  "
        f"({f.text_read_s / f.pdf_read_s:.4f}x the baseline; {f.pdf_read_s:.1f}s for {pages} pages)",
        f"          words recovered from the PDFs: {f.words_recovered:.1%}",
        f"chunking  (1400-token chunks, 50 overlap): {pages / f.chunk_s:10.0f} pages/s  "
        f"{mb / f.chunk_s:8.1f} MB/s  {f.chunks} chunks",
        f"truncate  head_tail:  {f.documents / f.head_tail_s:10.0f} documents/s",
        f"summary: PDF {pages / f.pdf_read_s:.1f} pages/s, chunking {pages / f.chunk_s:.0f} pages/s, "
        f"plain-text read {pages / f.text_read_s:.0f} pages/s",
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.documents", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--pages", type=int, default=1000)
    p.add_argument("--files", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="herd-docbench-") as tmp:
        figures = measure(Path(tmp), args.pages, args.files)
    print("\n".join(lines(figures)))
    return 0


if __name__ == "__main__":
    run(main)

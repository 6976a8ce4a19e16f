"""Document conversion and chunking throughput on a generated 1,000-page set (issue 11).

    python benchmarks/documents.py [--pages 1000] [--files 20]

Makes, in a temporary folder, `--files` PDFs with a text layer totalling `--pages` pages (about 450
words a page, tests/support/docfiles.py's writer) and the same text as .txt files. Then prints, in
one run on this machine:

1. baseline: reading the .txt files through `herd.jobs.documents.read` (pages/s, MB/s);
2. PDF: the same documents through `read` (pypdf text extraction; pages/s);
3. chunking: `herd.cascade.splitting.chunk` over the whole text at a 1,400-token budget (as
   chars at 4 chars/token) with 50 tokens of overlap: pages/s, MB/s and chunks made;
4. truncation: `head_tail` of every document to the same budget (documents/s).

Figures only, no asserts; single process, no database.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/documents.py`: sys.path[0] is benchmarks/
    sys.path.insert(0, str(REPO))

from herd.cascade import splitting  # noqa: E402 - after the path fix above
from herd.jobs import documents  # noqa: E402
from tests.support import docfiles  # noqa: E402

WORDS_PER_PAGE = 450
CHUNK_CHARS = 1400 * 4
OVERLAP_CHARS = 50 * 4


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--files", type=int, default=20)
    args = parser.parse_args(argv)
    per_file = max(1, args.pages // args.files)
    with tempfile.TemporaryDirectory(prefix="herd-docbench-") as tmp:
        folder = Path(tmp)
        pdfs, txts = [], []
        made = time.perf_counter()
        for i in range(args.files):
            pages = [docfiles.long_text(WORDS_PER_PAGE, seed=i * 10_000 + n) for n in range(per_file)]
            pdfs.append(docfiles.write_pdf(folder / f"doc{i:03d}.pdf", pages))
            txt = folder / f"doc{i:03d}.txt"
            txt.write_text("\n\n".join(pages))
            txts.append(txt)
        pages_total = per_file * args.files
        size_mb = sum(p.stat().st_size for p in txts) / 1e6
        print(f"set: {args.files} PDFs, {pages_total} pages, {size_mb:.1f} MB of text "
              f"(made in {time.perf_counter() - made:.1f}s)")  # fmt: skip

        text_records, text_s = timed(lambda: list(documents.read(txts)))
        print(f"baseline  .txt read:  {pages_total / text_s:10.0f} pages/s  {size_mb / text_s:8.1f} MB/s")
        pdf_records, pdf_s = timed(lambda: list(documents.read(pdfs)))
        ratio = text_s / pdf_s
        print(f"PDF       pypdf read: {pages_total / pdf_s:10.1f} pages/s  ({ratio:.4f}x the baseline; "
              f"{pdf_s:.1f}s for {pages_total} pages)")  # fmt: skip
        recovered = sum(len(r.text.split()) for r in pdf_records) / sum(
            len(r.text.split()) for r in text_records
        )
        print(f"          words recovered from the PDFs: {recovered:.1%}")

        texts = [r.text for r in pdf_records]
        chunks, chunk_s = timed(lambda: [splitting.chunk(t, CHUNK_CHARS, OVERLAP_CHARS) for t in texts])
        count = sum(len(c) for c in chunks)
        print(f"chunking  (1400-token chunks, 50 overlap): {pages_total / chunk_s:10.0f} pages/s  "
              f"{size_mb / chunk_s:8.1f} MB/s  {count} chunks")  # fmt: skip
        _, cut_s = timed(lambda: [splitting.head_tail(t, CHUNK_CHARS) for t in texts])
        print(f"truncate  head_tail:  {len(texts) / cut_s:10.0f} documents/s")
        print(
            f"summary: PDF {pages_total / pdf_s:.1f} pages/s, chunking {pages_total / chunk_s:.0f} "
            f"pages/s, plain-text read {pages_total / text_s:.0f} pages/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

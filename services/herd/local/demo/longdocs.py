"""The demo's long documents: three reviews longer than the small models' 512-token context.

Bundled in `data/long/` as a plain-text file, an HTML page (with a site's navigation around the
article) and a PDF with a text layer (made by `pdfsource/make_pdf.py`), each 1,100 to 1,400 words
(1,500 to 2,000 tokens). They run as one live job of the sentiment task, whose `long_documents:
{policy: chunk}` in the demo's herd file splits each into chunks that fit, classifies every chunk and
combines the chunk labels by a confidence-weighted vote (docs/documents.md), under whatever policy
the demo chose for the task: a document whose least confident supporting chunk is unsure escalates,
and the next model chunks it again. The panel shows per document what that cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import psycopg
from rich.console import Console

from herd.herdfile.model import HerdConfig
from herd.jobs import documents
from herd.jobs.documents import Record
from herd.jobs.submit import submit
from herd.local.demo.output import say
from herd.reporting.policies import usd
from herd.reporting.tables import Column, print_table
from herd.vocabulary import Dispatch

FOLDER = Path(__file__).parent / "data" / "long"
TASK = "sentiment"
JOB = "demo-sentiment-long"
# The references, by file name: each review's overall verdict.
EXPECTED = {
    "espresso.txt": "positive",
    "hotel.html": "negative",
    "laptop.pdf": "negative",
}


def records(folder: Path = FOLDER) -> list[Record]:
    """The bundled long documents with their references, keyed `long/<file>`."""
    read = documents.read(documents.expand([str(folder)]))
    return [replace(r, reference=EXPECTED.get(Path(r.key).name)) for r in read]


def submit_long(
    conn: psycopg.Connection, herd: HerdConfig, window: int, console: Console, folder: Path = FOLDER
) -> list[Dispatch]:
    """The long documents as a live job of the sentiment task (nothing new on a re-run)."""
    result = submit(conn, herd, job=JOB, task=TASK, records=records(folder), window=window)
    console.print(f"{JOB}: {result.read} long documents, {result.added} new", highlight=False)
    return result.dispatched


@dataclass(frozen=True)
class DocumentLine:
    """One long document as the workers ended it."""

    key: str
    words: int
    pages: int | None  # a PDF's pages; None for other formats
    chunks: int  # chunk prompts on the first model that split it
    escalated_chunks: int  # chunk prompts on the models after it
    models: tuple[str, ...]  # the models that ran its chunks, in the herd's order
    state: str
    answer: str | None  # the combined label; None when the document failed
    error: str | None
    expected: str | None
    cost_usd: Decimal  # its own attempts plus its chunks' (the `document_costs` view)
    busy_s: float  # seconds its attempts kept an endpoint busy

    @property
    def format(self) -> str:
        return Path(self.key).suffix.lstrip(".").upper() or "TEXT"


def collect(
    conn: psycopg.Connection, herd: HerdConfig, job: str = JOB, folder: Path = FOLDER
) -> list[DocumentLine]:
    """Per document of `job` (chunk prompts folded into their document), in key order."""
    order = {name: i for i, name in enumerate(herd.models)}
    docs = conn.execute(
        """SELECT p.id, p.doc_key, p.text, p.state, p.error, p.reference, f.answer,
                  coalesce(dc.cost_usd, 0),
                  (SELECT coalesce(sum(a.busy_s), 0) FROM attempts a JOIN prompts c ON c.id = a.prompt_id
                   WHERE c.id = p.id OR c.parent_id = p.id)
           FROM prompts p JOIN jobs j ON j.id = p.job_id
           LEFT JOIN finals f ON f.prompt_id = p.id
           LEFT JOIN document_costs dc ON dc.prompt_id = p.id
           WHERE j.name = %s AND p.parent_id IS NULL ORDER BY p.doc_key""",
        (job,),
    ).fetchall()
    chunk_rows = conn.execute(
        """SELECT c.parent_id, c.model, count(*) FROM prompts c JOIN jobs j ON j.id = c.job_id
           WHERE j.name = %s AND c.parent_id IS NOT NULL GROUP BY 1, 2""",
        (job,),
    ).fetchall()
    per_doc: dict[int, dict[str, int]] = {}
    for parent, model, n in chunk_rows:
        per_doc.setdefault(int(parent), {})[model] = int(n)
    lines = []
    for pid, key, text, state, error, reference, answer, cost, busy in docs:
        by_model = sorted(per_doc.get(int(pid), {}).items(), key=lambda item: order.get(item[0], len(order)))
        counts = [n for _, n in by_model]
        lines.append(
            DocumentLine(
                key=key,
                words=len(text.split()),
                pages=_pages(folder / Path(key).name),
                chunks=counts[0] if counts else 0,
                escalated_chunks=sum(counts[1:]),
                models=tuple(m for m, _ in by_model),
                state=state,
                answer=answer,
                error=error,
                # The demo submits with references; a job submitted by hand has none: the bundled ones.
                expected=reference or EXPECTED.get(Path(key).name),
                cost_usd=Decimal(cost),
                busy_s=float(busy),
            )
        )
    return lines


def _pages(path: Path) -> int | None:
    if path.suffix.lower() != ".pdf" or not path.is_file():
        return None
    from pypdf import PdfReader  # noqa: PLC0415 - pypdf loads only for a PDF

    return len(PdfReader(path).pages)


PANEL = (
    Column("document", numeric=False),
    Column("format", numeric=False),
    Column("words"),
    Column("chunks"),
    Column("esc.", "escalated chunks"),
    Column("label", "combined label", numeric=False),
    Column("cost"),
)


def rows(lines: Sequence[DocumentLine]) -> list[list[str]]:
    """The panel's cells: the format (with a PDF's pages), the words, the chunks on the first model
    and on the models after it, the combined label marked against the review's verdict (✓ right,
    ✗ wrong; `failed` when the document failed) and the document's cost."""
    out = []
    for line in lines:
        fmt = line.format + (f", {line.pages} pp" if line.pages is not None else "")
        if line.answer is None:
            label = "failed" if line.state == "failed" else line.state
        else:
            mark = "" if line.expected is None else (" ✓" if _same(line.answer, line.expected) else " ✗")
            label = line.answer + mark
        out.append(
            [
                Path(line.key).stem,
                fmt,
                f"{line.words:,}",
                str(line.chunks),
                str(line.escalated_chunks),
                label,
                usd(float(line.cost_usd)),
            ]
        )
    return out


def _same(answer: str, expected: str) -> bool:
    return answer.strip().lower().rstrip(".") == expected.lower()


def print_panel(console: Console, lines: Sequence[DocumentLine]) -> None:
    """The long-document panel: per document its format, size, chunks, escalated chunks, combined
    label and cost; then a line of totals and the first failure's reason, if any."""
    print_table(console, PANEL, rows(lines), title="long documents, chunked (sentiment task)")
    chunks = sum(line.chunks + line.escalated_chunks for line in lines)
    known = [line for line in lines if line.expected is not None]
    right = sum(1 for line in known if line.answer and _same(line.answer, line.expected or ""))
    busy = sum(line.busy_s for line in lines)
    say(
        console,
        f"{len(lines)} documents longer than the models' 512-token context: {chunks} chunk attempts, "
        f"{busy:.0f}s of model time, {usd(float(sum(line.cost_usd for line in lines)))} in all"
        + (f"; {right} of {len(known)} combined labels right" if known else "")
        + ". A document's cost is the sum of its chunks' attempts (the combine step is computed: no "
        "model call); an escalated document is chunked again by the next model.",
    )
    for line in lines:
        if line.error:
            say(console, f"  {Path(line.key).name}: {line.error}")

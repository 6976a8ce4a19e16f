"""`herd submit`, `herd status`, `herd export`: a job's documents in, its progress, its answers out."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from herd.cli.app import check_broker, console, database, herd_config, main, stale_lines, warn
from herd.files import atomic_binary, atomic_text
from herd.input_errors import InputError
from herd.output import count, counting_bar
from herd.reporting.tables import Column, print_table

if TYPE_CHECKING:
    from herd.herdfile.model import HerdConfig
    from herd.jobs.documents import InputFile
    from herd.jobs.submit import SubmitResult


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--job", required=True, help="Job name; submitting the same job again adds only new documents.")
@click.option("--task", help="Task template from the herd file (a batch file's lines name their own route).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "documents", "openai-batch"]),
    default="auto",
    show_default=True,
    help="openai-batch: OpenAI batch request lines (custom_id, method, url, body); auto: recognised "
    "from a .jsonl file's first line (docs/batch-api.md).",
)
@click.option("--text-column", default="text", show_default=True, help="CSV column holding the text.")
@click.option(
    "--calibration",
    is_flag=True,
    help="Every model of the task's route answers every prompt (docs/policy.md).",
)
@click.option("--sample", type=int, help="With --calibration: a seeded random sample of N documents.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--budget-usd", type=float, help="Cap on the job's attributed cost; uncertain answers wait.")
@click.option(
    "--audit",
    "audit_rate",
    type=float,
    help="Share of the prompts (e.g. 0.02) also answered by a reference model alone, to check the live "
    "policy's quality (docs/policy.md); default: the herd file's `audit:`, 0 turns it off.",
)
@click.option("--audit-reference", help="The audit's reference model (default: the task route's last).")
@click.option(
    "--skip-unreadable",
    is_flag=True,
    help="Go on past PDF/DOCX/HTML files that give no text or pass a bound (size, inflated size, pages, "
    "time); `herd status` and `herd export` list them.",
)
@click.pass_context
def submit(
    ctx: click.Context,
    paths: tuple[str, ...],
    job: str,
    task: str | None,
    fmt: str,
    text_column: str,
    calibration: bool,
    sample: int | None,
    seed: int,
    budget_usd: float | None,
    skip_unreadable: bool,
    audit_rate: float | None,
    audit_reference: str | None,
) -> None:
    """Store a document set (folders/globs of .txt/.md/.pdf/.docx/.html, JSONL, CSV) or OpenAI batch files
    and start their prompts."""
    from decimal import Decimal

    import psycopg

    from herd.input_errors import InputError
    from herd.jobs import documents
    from herd.jobs.sampling import sample as draw
    from herd.jobs.skipped import Collector
    from herd.jobs.submit import submit as do_submit
    from herd.quality.audit import resolve as resolve_audit
    from herd.settings import get_settings

    herd = herd_config(ctx)
    files = documents.expand(list(paths))
    if fmt == "openai-batch" or (fmt == "auto" and _batch_files(files)):
        if task is not None or sample is not None or skip_unreadable:
            raise InputError(
                "a batch file's lines name their route in body.model: it takes no --task, --sample or "
                "--skip-unreadable"
            )
        batch_files = [f.path for f in files]
        _submit_batch(herd, job, batch_files, calibration, budget_usd, audit_rate, audit_reference)
        return
    if task is None:
        raise InputError("--task is required for a document set (only a batch file names its own route)")
    if sample is not None and not calibration:
        raise InputError("--sample needs --calibration (a sample is for calibrating a policy)")
    if sample is not None and sample < 1:
        raise InputError(f"--sample must be at least 1 (got {sample}): an empty sample calibrates nothing")
    if calibration and budget_usd is not None:
        raise InputError("a calibration job runs every model on every prompt: it takes no --budget-usd")
    if budget_usd is not None and budget_usd < 0:
        raise InputError(f"--budget-usd must be >= 0 (got {budget_usd})")
    kind = "calibration" if calibration else "live"
    audit = resolve_audit(herd, task, audit_rate, audit_reference, kind)
    url = database()
    check_broker()  # before anything is written: a job whose messages cannot be sent is half a job
    skipped = Collector()
    records = documents.read(
        files, text_column=text_column, on_unreadable=skipped if skip_unreadable else None
    )
    if sample is not None:
        records = draw(records, sample, seed)
    with counting_bar(console, "reading", "records") as bar:
        task_id = bar.add_task("read", total=None)
        with psycopg.connect(url) as conn:
            result = do_submit(
                conn,
                herd,
                job=job,
                task=task,
                records=records,
                window=get_settings().dispatch_window,
                progress=lambda n: bar.advance(task_id, n),
                kind=kind,
                budget_usd=Decimal(str(budget_usd)) if budget_usd is not None else None,
                skipped=skipped,
                inputs=[str(f.path) for f in files],
                audit=audit,
            )
    _publish(result, "document", url)
    for item in skipped:
        console.print(f"skipped {item.path}: {item.reason}", markup=False, soft_wrap=True)


def _publish(result: SubmitResult, what: str, url: str) -> None:
    """Send a committed submit's first messages and say what was stored and sent. A broker that fails
    between the check before writing and this publish does not fail the command: the job is stored
    whole, and the messages not sent are left due (herd/housekeeping/sending.py), so the housekeeper or
    a worker's pump sends them at its first tick once the broker is back; a warning says so."""
    import psycopg

    from herd.housekeeping.sending import send
    from herd.queues import publish
    from herd.settings import get_settings

    unsent = send(
        lambda: psycopg.connect(url),
        result.dispatched,
        stale_after_s=get_settings().stale_after_s,
        publish=publish,
    )
    console.print(
        f"job {result.job}: read {count(result.read, what)}, "
        f"added {count(result.added, 'new prompt')}, sent {len(result.dispatched) - unsent} to the queues",
        markup=False,
        soft_wrap=True,
    )
    if unsent:
        warn(
            f"job {result.job} is stored, but {count(unsent, 'message')} could not be sent (the broker "
            "went down after the job was written); the housekeeper, or a worker's pump, sends them at "
            "its first tick once the broker is back: nothing to submit again"
        )
    if result.audit is not None:
        console.print(
            f"audit: {count(result.audited, 'new prompt')} sampled at rate {result.audit.rate:g} for "
            f"{result.audit.reference} alone (job {result.job}~audit)",
            markup=False,
            soft_wrap=True,
        )


def _batch_files(files: list[InputFile]) -> bool:
    """Whether every input is a .jsonl file whose first non-blank line is an OpenAI batch request."""
    from herd.batch.format import looks_like_batch

    if not files or any(f.path.suffix.lower() != ".jsonl" for f in files):
        return False
    with files[0].path.open("rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    return looks_like_batch(first.removeprefix(b"\xef\xbb\xbf"))


def _submit_batch(
    herd: HerdConfig,
    job: str,
    paths: list[Path],
    calibration: bool,
    budget_usd: float | None,
    audit_rate: float | None,
    audit_reference: str | None,
) -> None:
    """`herd submit` of OpenAI batch files: every line checked, all stored or none (herd/batch/submit.py);
    a batch for a task's cascade is audited like a document set (`--audit`, else the herd file's)."""
    from decimal import Decimal

    import psycopg

    from herd.batch.submit import Source, submit_batch
    from herd.settings import get_settings

    url = database()
    check_broker()
    sources = [Source(str(path), _chunks(path)) for path in paths]
    with counting_bar(console, "reading", "requests") as bar:
        task_id = bar.add_task("read", total=None)
        with psycopg.connect(url) as conn:
            result = submit_batch(
                conn,
                herd,
                job=job,
                sources=sources,
                window=get_settings().dispatch_window,
                max_requests=None,
                progress=lambda n: bar.advance(task_id, n),
                calibration=calibration,
                budget_usd=Decimal(str(budget_usd)) if budget_usd is not None else None,
                audit_rate=audit_rate,
                audit_reference=audit_reference,
            )
    _publish(result, "request", url)


def _chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


# Short headers so the table fits 80 columns (the escalation rate shares the escalated column); the
# long labels name the figures when it still does not fit and prints a block per model instead.
STATUS_COLUMNS = (
    Column("model", numeric=False),
    Column("attempts"),
    Column("errors"),
    Column("escalated", "escalated (rate)"),
    Column("finals"),
    Column("latency", "mean latency"),
    Column("tokens in/out"),
)


@main.command()
@click.argument("job")
@click.pass_context
def status(ctx: click.Context, job: str) -> None:
    """Counts per state and per model, escalation rate and throughput of a job, and its audit's
    estimate of the live policy's quality."""
    import psycopg

    from herd.jobs.status import status as job_status
    from herd.ledger.jobs import job_id
    from herd.reporting.audit import estimate, lines
    from herd.urls import database_url

    with psycopg.connect(database_url()) as conn:
        st = job_status(conn, job)
        stale = stale_lines(ctx, conn, job)
        audit = estimate(conn, job_id(conn, job)[0], job, lambda: herd_config(ctx).tasks)
    out = Console()
    states = "  ".join(f"{k}: {v}" for k, v in st.states.items())
    out.print(f"job {st.job} (task {st.task}): {st.total} prompts  {states}", markup=False, soft_wrap=True)
    rows = [
        [
            m.model,
            str(m.attempts),
            str(m.errors),
            f"{m.escalated} ({m.escalation_rate:.1%})",
            str(m.finals),
            f"{m.mean_latency_s:.3f}s" if m.mean_latency_s is not None else "-",
            f"{m.prompt_tokens}/{m.generated_tokens}",
        ]
        for m in st.models
    ]
    print_table(out, STATUS_COLUMNS, rows)
    if st.budget_usd is not None:
        spent = st.spent_usd or 0
        share = float(spent) / float(st.budget_usd) if st.budget_usd else 0.0
        out.print(
            f"budget: spent {spent:.6g} of {st.budget_usd:.6g} USD ({share:.0%}); "
            + (f"reserved for escalations in flight: {st.reserved_usd:.6g}; " if st.reserved_usd else "")
            + f"candidates held: {st.states.get('held', 0)}; kept for lack of budget: {st.kept_for_budget}",
            markup=False,
            soft_wrap=True,
        )
    if st.kind == "calibration":
        out.print("calibration job: every model of the route answers every prompt", markup=False)
    if st.kind == "audit":
        out.print("audit job: a sample of another job's prompts, its reference model alone", markup=False)
    if st.chunks:
        out.print(f"long documents: {st.chunks} chunk prompts (in the model rows above)", markup=False)
    if st.skipped:
        out.print(f"skipped {len(st.skipped)} unreadable file(s):", markup=False)
        for item in st.skipped:
            out.print(f"  {item.path}: {item.reason}", markup=False, soft_wrap=True)
    if st.failures:
        shown = sum(n for _, n, _ in st.failures)
        out.print(f"why {st.states.get('failed', 0)} failed:", markup=False)
        for reason, n, example in st.failures:
            out.print(f"  {n} x {reason} (e.g. {example})", markup=False, soft_wrap=True)
        if shown < st.states.get("failed", 0):
            out.print(f"  {st.states['failed'] - shown} more, for other reasons (docs/sql.md)", markup=False)
    for line in stale:
        out.print(line, markup=False, soft_wrap=True)
    if st.throughput is not None:
        out.print(f"throughput: {st.throughput:.1f} prompts/s over {st.elapsed_s:.1f}s")
    for line in lines(audit) if audit is not None else []:
        out.print(line, markup=False, soft_wrap=True)


@main.command()
@click.argument("job")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "openai-batch"]),
    default="jsonl",
    show_default=True,
    help="openai-batch: OpenAI's batch output lines (and --errors for the failed requests).",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File (default stdout)."
)
@click.option(
    "--errors",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --format openai-batch: the error file (failed, cancelled or expired requests).",
)
def export(job: str, fmt: str, output: Path | None, errors: Path | None) -> None:
    """Final answers of a job, with the model that produced each."""
    import psycopg

    from herd.jobs.status import export as do_export
    from herd.urls import database_url

    if errors is not None and fmt != "openai-batch":
        raise InputError("--errors is for --format openai-batch")
    if fmt == "openai-batch":
        _export_batch(job, output, errors)
        return
    with psycopg.connect(database_url()) as conn:
        if output is None:
            exported = do_export(conn, job, sys.stdout, fmt)
        else:
            with atomic_text(output) as handle:
                exported = do_export(conn, job, handle, fmt)
    console.print(f"exported {count(exported, 'final answer')}")


def _export_batch(job: str, output: Path | None, errors: Path | None) -> None:
    """`herd export --format openai-batch`: the output (and error) file from the ledger, each written whole
    or not at all."""
    from contextlib import ExitStack

    import psycopg

    from herd.batch.export import write
    from herd.urls import database_url

    with ExitStack() as stack, psycopg.connect(database_url()) as conn:
        out = stack.enter_context(atomic_binary(output)) if output is not None else sys.stdout.buffer
        err = stack.enter_context(atomic_binary(errors)) if errors is not None else None
        counts = write(conn, job, out, err)
    console.print(
        f"exported {count(counts.outputs, 'answer')} and {count(counts.errors, 'failed request')}"
        + ("" if errors is not None or not counts.errors else " (not written: give --errors FILE)")
        + (f"; {counts.unfinished} not finished yet" if counts.unfinished else ""),
        markup=False,
        soft_wrap=True,
    )

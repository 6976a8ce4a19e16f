"""The `herd` command. Configuration is loaded lazily inside each command, so `--help` touches nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.config import ConfigError, HerdConfig, load_herd
from services.documents import InputError
from services.jobs import UnknownJobError
from services.progress import counting_bar
from services.settings import get_settings

console = Console(stderr=True)
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, InputError, UnknownJobError)


class HerdGroup(click.Group):
    """Turn the errors a user can fix into one clear line and exit status 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from services.procs import ProcessError

        try:
            return super().invoke(ctx)
        except USER_ERRORS + (ProcessError,) as exc:
            # soft_wrap: a long path must stay on one line, so the message can be grepped and clicked.
            console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
            sys.exit(2)


@click.group(cls=HerdGroup)
@click.option(
    "--herd-file",
    type=click.Path(path_type=Path),
    envvar="HERD_HERD_FILE",
    help="Herd definition (default herd.yaml, or $HERD_HERD_FILE).",
)
@click.pass_context
def main(ctx: click.Context, herd_file: Path | None) -> None:
    """Herd: run a herd of open LLMs as one system for bulk work."""
    if herd_file is not None:
        # Settings are the one source of configuration, also for the worker code Celery runs.
        os.environ["HERD_HERD_FILE"] = str(herd_file.resolve())
        get_settings.cache_clear()
    ctx.obj = get_settings().herd_file


def herd_config(ctx: click.Context) -> HerdConfig:
    return load_herd(ctx.find_root().obj)


def database() -> str:
    from services.db import migrate
    from services.runtime import database_url

    url = database_url()
    migrate(url)
    return url


@main.command()
def migrate() -> None:
    """Bring the database schema to the latest revision."""
    database()
    console.print("database schema is up to date")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--job", required=True, help="Job name; submitting the same job again adds only new documents.")
@click.option("--task", required=True, help="Task template from the herd file.")
@click.option("--text-column", default="text", show_default=True, help="CSV column holding the text.")
@click.pass_context
def submit(ctx: click.Context, paths: tuple[str, ...], job: str, task: str, text_column: str) -> None:
    """Store a document set (folders/globs of .txt/.md, JSONL, CSV) and start its prompts."""
    import psycopg

    from services import documents
    from services.submit import submit as do_submit
    from workers.app import publish

    herd = herd_config(ctx)
    files = documents.expand(list(paths))
    url = database()
    with counting_bar(console, "reading", "records") as bar:
        task_id = bar.add_task("read", total=None)
        with psycopg.connect(url) as conn:
            result = do_submit(
                conn,
                herd,
                job=job,
                task=task,
                records=documents.read(files, text_column=text_column),
                window=get_settings().dispatch_window,
                progress=lambda n: bar.advance(task_id, n),
            )
    publish(result.dispatched)
    console.print(
        f"job {result.job}: read {result.read} documents, added {result.added} new prompts, "
        f"sent {len(result.dispatched)} to the queues",
        markup=False,
        soft_wrap=True,
    )


@main.command()
@click.option("--model", required=True, help="The herd model whose queue this worker consumes.")
@click.option("--loglevel", default="info", show_default=True)
@click.pass_context
def worker(ctx: click.Context, model: str, loglevel: str) -> None:
    """Run a Celery worker for one model's queue (herd.<model>)."""
    from workers.app import app, queue_for

    herd = herd_config(ctx)
    if model not in herd.models:
        raise ConfigError(f"unknown model {model!r}; the herd file defines: {', '.join(herd.models)}")
    database()
    from workers.context import get_context

    get_context()  # a bad herd file, key or database fails here, with exit status 2, before consuming
    # app.start rather than worker_main: it returns the worker's exit code, which must reach the shell.
    code = app.start(
        [
            "worker",
            "--queues",
            queue_for(model),
            "--hostname",
            f"{model}@%h",
            # Inference calls are I/O-bound HTTP: threads, one per request the endpoint may have in flight.
            "--pool",
            "threads",
            "--concurrency",
            str(herd.models[model].max_in_flight),
            "--prefetch-multiplier",
            "1",
            "--task-events",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            loglevel,
        ]
    )
    sys.exit(code or 0)


@main.command()
@click.argument("job")
def status(job: str) -> None:
    """Counts per state and per model, escalation rate and throughput of a job."""
    import psycopg

    from services.jobs import status as job_status
    from services.runtime import database_url

    with psycopg.connect(database_url()) as conn:
        st = job_status(conn, job)
    out = Console()
    states = "  ".join(f"{k}: {v}" for k, v in st.states.items())
    out.print(f"job {st.job} (task {st.task}): {st.total} prompts  {states}", markup=False, soft_wrap=True)
    table = Table(
        "model",
        "attempts",
        "errors",
        "escalated",
        "escalation rate",
        "finals",
        "mean latency",
        "tokens in/out",
    )
    for m in st.models:
        latency = f"{m.mean_latency_s:.3f}s" if m.mean_latency_s is not None else "-"
        table.add_row(
            m.model,
            str(m.attempts),
            str(m.errors),
            str(m.escalated),
            f"{m.escalation_rate:.1%}",
            str(m.finals),
            latency,
            f"{m.prompt_tokens}/{m.generated_tokens}",
        )
    out.print(table)
    if st.throughput is not None:
        out.print(f"throughput: {st.throughput:.1f} prompts/s over {st.elapsed_s:.1f}s")


@main.command()
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File (default stdout)."
)
def export(job: str, fmt: str, output: Path | None) -> None:
    """Final answers of a job, with the model that produced each."""
    import psycopg

    from services.jobs import export as do_export
    from services.runtime import database_url

    with psycopg.connect(database_url()) as conn:
        if output is None:
            count = do_export(conn, job, sys.stdout, fmt)
        else:
            # Write beside the target and rename, so a failed export never leaves half a file.
            partial = output.with_name(output.name + ".partial")
            with partial.open("w", encoding="utf-8", newline="") as handle:
                count = do_export(conn, job, handle, fmt)
            partial.replace(output)
    console.print(f"exported {count} final answers")


def masked(url: str) -> str:
    """The URL without its password, for output that may end up in a terminal log."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


@main.command()
def up() -> None:
    """Start the embedded Postgres and Redis (when no URLs are configured)."""
    from services.runtime import broker_url, database_url

    console.print(f"postgres: {masked(database_url())}\nredis: {masked(broker_url())}")


@main.command()
def down() -> None:
    """Stop the local herd (workers, model servers) and the embedded services under HERD_HOME."""
    from services import localherd
    from services.embedded import stop_all

    home = get_settings().home
    localherd.stop(home)
    stop_all(home)
    console.print("stopped")


@main.command()
def ps() -> None:
    """List the embedded services and the local herd's processes under HERD_HOME."""
    from services import localherd
    from services.embedded import status as service_status

    home = get_settings().home
    table = Table("process", "running", "pid", "url / log")
    for info in service_status(home):
        table.add_row(info.name, "yes" if info.running else "no", str(info.pid or "-"), masked(info.url))
    for proc in localherd.status(home):
        table.add_row(
            f"{proc.kind} {proc.name}", "yes" if proc.pid else "no", str(proc.pid or "-"), str(proc.log)
        )
    Console().print(table)


@main.command()
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait for the demo jobs.")
def demo(timeout: float) -> None:
    """Run the whole system locally: embedded Postgres/Redis, two real models, workers, a sample job."""
    from services import demo as local_demo

    try:
        local_demo.run(get_settings(), Console(), timeout_s=timeout)
    except KeyboardInterrupt:
        sys.exit(130)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def flower(args: tuple[str, ...]) -> None:
    """Run Flower on the herd's broker (extra arguments go to Flower)."""
    from workers.app import app

    app.start(["flower", *args])


@main.command()
@click.argument("job")
@click.option(
    "--scorer",
    type=click.Choice(["auto", "exact", "f1", "label", "judge"]),
    default="auto",
    show_default=True,
    help="auto: label for classify, f1 + exact with a reference, else the judge (when given).",
)
@click.option("--judge", "judge_model", help="Herd model that rates answers 1-10 (LLM-as-judge).")
@click.option("--rescore", is_flag=True, help="Score again answers that already have a score.")
@click.pass_context
def score(ctx: click.Context, job: str, scorer: str, judge_model: str | None, rescore: bool) -> None:
    """Score the answers (and refinements) of a job; one stored score per attempt and scorer."""
    from services.runtime import database_url
    from services.score_job import score_with_progress

    herd = herd_config(ctx)
    summary = score_with_progress(
        console, database_url(), herd, job, scorer=scorer, judge_model=judge_model, rescore=rescore
    )
    out = Console()
    written = ", ".join(f"{name}: {n}" for name, n in sorted(summary.scored.items())) or "none"
    out.print(
        f"job {summary.job}: {summary.attempts} answers; scores written: {written}; "
        f"already scored: {summary.already}; skipped (nothing to score with): {summary.skipped}; "
        f"judge failures: {summary.failures}",
        markup=False,
        soft_wrap=True,
    )
    for example in summary.failure_examples:
        console.print(f"judge failure: {example}", markup=False, soft_wrap=True)
    if summary.skipped and scorer == "auto" and judge_model is None:
        console.print("a judge (--judge MODEL) can rate the answers that have no reference", markup=False)
    if summary.means:
        table = Table("scorer", "model", "stage", "answers", "mean score", title="stored scores of the job")
        for m in summary.means:
            table.add_row(m.scorer, m.model, m.stage, str(m.count), f"{m.mean:.3f}")
        out.print(table)


@main.command()
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File (default stdout)."
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw refined quality against cost per 1k prompts, with the Pareto front (PNG).",
)
@click.option("--scorer", help="Scorer behind quality and PeRFICS (default: the job's first by name).")
@click.option(
    "--weights",
    default="p=1,r=0.5,c=0.05",
    show_default=True,
    help="PeRFICS weights: p refined quality, r refinement gain, c per doubling of cost.",
)
def report(
    job: str, fmt: str, output: Path | None, plot_file: Path | None, scorer: str | None, weights: str
) -> None:
    """Cost (attributed and provisioned), quality and PeRFICS of a job, per model and per policy."""
    import psycopg

    from services import report as job_report
    from services.perfics import Weights
    from services.runtime import database_url

    try:
        parsed = Weights.parse(weights)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--weights") from exc
    with psycopg.connect(database_url()) as conn:
        try:
            built = job_report.build(conn, job, scorer=scorer, weights=parsed)
        except job_report.UnknownScorerError as exc:
            raise click.BadParameter(str(exc), param_hint="--scorer") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise click.ClickException("the reporting views are missing: run `herd migrate`") from exc
    if output is None:
        job_report.render(built, fmt, sys.stdout)
    else:
        # Write beside the target and rename, so a failed report never leaves half a file.
        partial = output.with_name(output.name + ".partial")
        with partial.open("w", encoding="utf-8", newline="") as handle:
            job_report.render(built, fmt, handle)
        partial.replace(output)
    if plot_file is not None:
        job_report.plot(built, plot_file)
        console.print(f"plot written to {plot_file}", markup=False, soft_wrap=True)


if __name__ == "__main__":
    main()

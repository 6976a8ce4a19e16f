"""`herd score` and `herd report`: quality of the answers, cost and PeRFICS."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from herd.cli.app import console, herd_config, main, stale_lines
from herd.files import atomic_text, check_output_path


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
    from herd.quality.scoring import score_with_progress
    from herd.urls import database_url

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
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table", show_default=True
)
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
    "--wide",
    is_flag=True,
    help="Table: every column (escalations, refinements, base quality, cost, GPU-hours, latency).",
)
@click.option(
    "--weights",
    default="p=1,r=0.5,c=0.05",
    show_default=True,
    help="PeRFICS weights: p refined quality, r refinement gain, c per doubling of cost.",
)
@click.pass_context
def report(
    ctx: click.Context,
    job: str,
    fmt: str,
    output: Path | None,
    plot_file: Path | None,
    scorer: str | None,
    wide: bool,
    weights: str,
) -> None:
    """Cost (attributed and provisioned), quality and PeRFICS of a job, per model and per policy."""
    import psycopg

    from herd.reporting.build import build
    from herd.reporting.perfics import Weights
    from herd.reporting.plot import plot
    from herd.reporting.render import render
    from herd.urls import database_url

    try:
        parsed = Weights.parse(weights)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--weights") from exc
    # Both files before the report is built: a typo in --plot must not cost a build, nor leave -o
    # written and the plot missing.
    for path in (output, plot_file):
        if path is not None:
            check_output_path(path)
    url = database_url()
    _seal_first(url, job)
    with psycopg.connect(url) as conn:
        try:
            built = build(conn, job, scorer=scorer, weights=parsed, tasks=lambda: herd_config(ctx).tasks)
        except psycopg.errors.UndefinedTable as exc:
            raise click.ClickException("the reporting views are missing: run `herd migrate`") from exc
        stale = stale_lines(click.get_current_context(), conn, job)
    if output is None:
        render(built, fmt, sys.stdout, wide=wide)
    else:
        with atomic_text(output) as handle:
            render(built, fmt, handle, wide=wide)
    for line in stale:  # on stderr: the report itself may be JSON or CSV on stdout
        console.print(line, markup=False, soft_wrap=True)
    if plot_file is not None:
        plot(built, plot_file)
        console.print(f"plot written to {plot_file}", markup=False, soft_wrap=True)


def _seal_first(url: str, job: str) -> None:
    """Seal a finished, unsealed job before reporting it (herd.housekeeping.work.seal_job), so this
    report and every later one read its stored cost rows instead of sweeping its attempts. Best effort:
    a role that may only read (herd_reader), or a job that cannot be sealed yet, is reported live."""
    import psycopg

    from herd.housekeeping.work import seal_job
    from herd.settings import get_settings

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT j.id FROM jobs j WHERE j.name = %s
                 AND NOT EXISTS (SELECT FROM cost_rollup_jobs s WHERE s.job_id = j.id)
                 AND NOT EXISTS (SELECT FROM prompts p WHERE p.job_id = j.id
                                 AND p.state IN ('pending', 'queued', 'held'))""",
            (job,),
        ).fetchone()
        if row is None:  # unknown (build says so), sealed already, or still running
            return
        try:
            if seal_job(conn, int(row[0]), get_settings()):
                console.print(f"job {job}: finished; its costs are now stored (sealed)", markup=False)
        except psycopg.errors.InsufficientPrivilege:
            pass  # a read-only role: the report computes the costs live, as before

"""`herd demo`: the whole system on one machine with two real local models.

Starts what is missing (embedded Postgres and Redis, migrations, llama.cpp servers for SmolLM2 and
Gemma-3, one worker per model), submits the bundled sample set, shows progress, waits and prints
per-model and per-task figures. Everything it starts keeps running for the next run; `herd down`
stops it. Ctrl-C only stops the watching: submits are transactional and the workers finish the job.
"""

from __future__ import annotations

import os
import string
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from rich.console import Console

from herd.cli.output import counting_bar
from herd.files import atomic_text
from herd.herdfile.model import HerdConfig, load_herd
from herd.jobs import documents
from herd.jobs.submit import submit
from herd.ledger.db import migrate
from herd.local import localherd
from herd.local.demo.summary import print_summary
from herd.settings import Settings
from herd.urls import broker_url, database_url

HERE = Path(__file__).parent
# Bundled document sets, one job per task.
JOBS: dict[str, Path] = {
    "sentiment": HERE / "data" / "sentiment.jsonl",
    "capitals": HERE / "data" / "capitals.jsonl",
}


@dataclass(frozen=True)
class DemoResult:
    jobs: list[str]
    wall_s: float
    states: dict[str, int]


def job_name(task: str) -> str:
    return f"demo-{task}"


def write_herd_file(home: Path, urls: dict[str, str]) -> Path:
    """The bundled herd definition with the local servers' URLs filled in."""
    template = string.Template((HERE / "herd.yaml").read_text())
    path = localherd.herd_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_text(path) as handle:
        handle.write(template.substitute({f"{name}_url": url for name, url in urls.items()}))
    return path


def start(settings: Settings, console: Console) -> tuple[HerdConfig, str]:
    """Bring up services, model servers and workers; return the herd and the database URL."""
    home = settings.home
    with console.status("starting embedded Postgres and Redis"):
        db_url, broker = database_url(settings), broker_url(settings)
        migrate(db_url)
    urls: dict[str, str] = {}
    for name in localherd.MODELS:
        with console.status(f"starting model server {name} (llama.cpp)"):
            urls[name] = localherd.ensure_server(home, name)
    herd = load_herd(write_herd_file(home, urls))
    env = {
        **_inherited_env(),
        "HERD_DATABASE_URL": db_url, "HERD_BROKER_URL": broker, "HERD_HOME": str(home),
    }  # fmt: skip
    for model in herd.models:
        with console.status(f"starting worker {model}"):
            localherd.ensure_worker(home, model, env)
    return herd, db_url


def _inherited_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}


def run(settings: Settings, console: Console, *, timeout_s: float = 3600.0) -> DemoResult:
    from herd.queues import publish

    started = time.monotonic()
    herd, db_url = start(settings, console)
    jobs = [job_name(task) for task in JOBS]
    with psycopg.connect(db_url) as conn:
        for task, path in JOBS.items():
            result = submit(
                conn, herd, job=job_name(task), task=task, records=documents.read([path]),
                window=settings.dispatch_window,
            )  # fmt: skip
            publish(result.dispatched)
            console.print(f"{result.job}: {result.read} documents, {result.added} new", highlight=False)
        try:
            states = _watch(conn, jobs, console, timeout_s)
        except KeyboardInterrupt:
            console.print(
                "\ninterrupted: nothing is half-written and the workers keep going in the background; "
                "run `herd demo` again to watch, `herd down` to stop everything."
            )
            raise
        wall = time.monotonic() - started
        print_summary(conn, herd, {job_name(t): t for t in JOBS}, console)
        plots = [_cost_report(conn, db_url, herd, settings.home, task, console) for task in JOBS]
    console.print(f"Pareto plots (quality against cost): {', '.join(str(p) for p in plots)}", highlight=False)
    console.print(f"wall time {wall:.0f}s. The local herd keeps running; `herd down` stops it.")
    return DemoResult(jobs=jobs, wall_s=wall, states=states)


def _cost_report(
    conn: psycopg.Connection, db_url: str, herd: HerdConfig, home: Path, task: str, console: Console
) -> Path:
    """Score the job's answers against the bundled references, then its cost and PeRFICS table."""
    from herd.quality.scoring import score_with_progress
    from herd.reporting.build import build
    from herd.reporting.plot import plot
    from herd.reporting.render import render_table

    job = job_name(task)
    score_with_progress(console, db_url, herd, job)
    conn.commit()  # a fresh snapshot that sees the scores just written
    built = build(conn, job)
    render_table(built, console)  # compact: `herd report JOB --wide` has every column
    path = home / "demo" / f"pareto-{task}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(built, path)
    return path


def _counts(conn: psycopg.Connection, jobs: list[str]) -> dict[str, int]:
    rows = conn.execute(
        """SELECT p.state, count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id
           WHERE j.name = ANY(%s) GROUP BY p.state""",
        (jobs,),
    ).fetchall()
    conn.commit()  # end the snapshot, so the next poll sees the workers' progress
    return {state: int(n) for state, n in rows}


def _watch(conn: psycopg.Connection, jobs: list[str], console: Console, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    with counting_bar(console, "answering", "prompts", transient=False) as bar:
        counts = _counts(conn, jobs)
        task = bar.add_task("prompts", total=sum(counts.values()))
        while True:
            counts = _counts(conn, jobs)
            finished = counts.get("done", 0) + counts.get("failed", 0)
            bar.update(task, completed=finished)
            if finished == sum(counts.values()):
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"the demo jobs did not finish in {timeout_s:.0f}s: {counts}")
            time.sleep(0.5)

"""`herd demo`: the whole system on one machine with two real local models, choosing its own policy.

Starts what is missing (embedded Postgres and Redis, migrations, llama.cpp servers for SmolLM2 and
Gemma-3, one worker per model), then per bundled task (docs/policy.md, "The demo"):
1. calibrates on a seeded 40% sample (every model answers every prompt) and scores it;
2. `herd calibrate`s it (98% of the best single model's quality, at the lowest cost, promised at
   90% confidence), prints the chosen policy and what it promises (or that the sample is too small
   to promise a saving, and what it runs instead), records it as the active version the workers
   run, and trains a TF-IDF router;
3. runs the rest of the set as a live job under that version, and the rest again as a calibration
   job, so the closing table shows, on the same prompts that were never used to choose, the chosen
   policy as the workers ran it beside each model alone, the herd file's cascade, the router and
   the oracle;
4. runs three bundled long reviews (a text file, an HTML page, a PDF; data/long/), each longer than
   the models' context, as a job of the sentiment task under its `chunk` long-document policy, and
   prints per document its chunks, escalated chunks, combined label and cost (demo/longdocs.py).
Everything it starts keeps running for the next run; `herd down` stops it. Re-running reuses every
job and the recorded version (nothing is submitted or recorded twice). Ctrl-C only stops the
watching: submits and versions are transactional and the workers finish the jobs.
"""

from __future__ import annotations

import os
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
from rich.console import Console

from herd.files import atomic_text
from herd.herdfile.model import HerdConfig, load_herd
from herd.housekeeping.sending import send
from herd.jobs.submit import submit
from herd.ledger.db import migrate
from herd.local import localherd
from herd.local.demo import compare, longdocs, plan
from herd.local.demo.choose import TaskChoice, choose_task, lines
from herd.local.demo.output import say
from herd.local.demo.plan import TaskPlan
from herd.local.demo.summary import print_summary
from herd.output import counting_bar
from herd.quality.scoring import score_with_progress
from herd.queues import publish
from herd.reporting.build import build
from herd.reporting.plot import plot
from herd.settings import Settings
from herd.urls import broker_url, database_url
from herd.vocabulary import Dispatch

HERE = Path(__file__).parent
# Bundled document sets with references, one per task.
JOBS: dict[str, Path] = {
    "sentiment": HERE / "data" / "sentiment.jsonl",
    "capitals": HERE / "data" / "capitals.jsonl",
}
# The demo's workers re-read the active policy this often (HERD_POLICY_TTL_S; default 30 s), so the
# live jobs submitted right after `calibrate` are decided by the new version, not the herd file.
POLICY_TTL_S = 3.0


@dataclass(frozen=True)
class DemoResult:
    jobs: list[str]
    wall_s: float
    states: dict[str, int]
    choices: dict[str, TaskChoice]


def job_name(task: str) -> str:
    """The task's live job: the rest of the set under the chosen policy."""
    return plan.live_job(task)


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
        "HERD_DATABASE_URL": db_url,
        "HERD_BROKER_URL": broker,
        "HERD_HOME": str(home),
        "HERD_POLICY_TTL_S": str(POLICY_TTL_S),
    }
    for model in herd.models:
        with console.status(f"starting worker {model}"):
            localherd.ensure_worker(home, model, env)
    return herd, db_url


def _inherited_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}


# --- the phases, each safe to repeat; the in-process test drives them with fake backends ---------


def submit_calibration(
    conn: psycopg.Connection, herd: HerdConfig, plans: Sequence[TaskPlan], window: int, console: Console
) -> list[Dispatch]:
    """Every task's calibration sample, then every task's rest, all as calibration jobs (every model
    answers every prompt). Samples first: the models' queues are FIFO, so they finish first and the
    policies are chosen while the rests are still being answered."""
    dispatched: list[Dispatch] = []
    batches = [(p.task, p.calibration_job, p.sample) for p in plans] + [
        (p.task, p.rest_job, p.rest) for p in plans
    ]
    for task, job, records in batches:
        result = submit(conn, herd, job=job, task=task, records=records, window=window, kind="calibration")
        dispatched += result.dispatched
    for p in plans:
        say(
            console,
            f"{p.task}: {len(p.sample)} of {len(p.sample) + len(p.rest)} documents calibrate "
            f"({p.calibration_job}); the other {len(p.rest)} are the rest, run live under the chosen "
            f"policy later, and by every model now ({p.rest_job}) for the comparison",
        )
    return dispatched


def score(console: Console, db_url: str, herd: HerdConfig, jobs: Sequence[str]) -> None:
    """Score answers against the bundled references (answers already scored are skipped)."""

    for job in jobs:
        score_with_progress(console, db_url, herd, job)


def choose_policies(
    conn: psycopg.Connection, herd: HerdConfig, plans: Sequence[TaskPlan], console: Console
) -> dict[str, TaskChoice]:
    conn.commit()  # a fresh snapshot that sees the scores just written
    console.print()
    say(
        console,
        "Choosing a policy per task (`herd calibrate`): target 98% of the best single model's "
        "accuracy at the lowest cost, promised at 90% confidence. The policies are searched and "
        "ordered by cost on 30% of the calibration prompts and tested in that order on the other 70%; "
        "a cheaper policy is chosen only if it passes. Why that target: as good as the best model, "
        "for less, is what a first run should answer; quality per dollar alone would pick a cheap "
        "model however poor it is.",
    )
    choices = {}
    for p in plans:
        console.print()
        with console.status(f"choosing the policy for {p.task}"):
            choices[p.task] = choose_task(conn, herd, p.task, p.calibration_job)
        for line in lines(choices[p.task]):
            say(console, line)
    return choices


def submit_live(
    conn: psycopg.Connection, herd: HerdConfig, plans: Sequence[TaskPlan], window: int, console: Console
) -> list[Dispatch]:
    """The rest of each task as a live job; `submit` enters it at the active version's entry model."""
    dispatched: list[Dispatch] = []
    for p in plans:
        result = submit(conn, herd, job=p.live_job, task=p.task, records=p.rest, window=window)
        dispatched += result.dispatched
        console.print(f"{p.live_job}: {result.read} documents, {result.added} new", highlight=False)
    return dispatched


def print_comparison(
    conn: psycopg.Connection,
    herd: HerdConfig,
    plans: Sequence[TaskPlan],
    choices: dict[str, TaskChoice],
    console: Console,
) -> None:
    conn.commit()
    for p in plans:
        tc = choices[p.task]
        found = compare.compare(conn, herd, tc, p.live_job, p.rest_job)
        console.print()
        compare.print_task(console, tc, found, p.live_job, p.rest_job)
    say(console, compare.cost_note())


def run(settings: Settings, console: Console, *, timeout_s: float = 3600.0) -> DemoResult:
    started = time.monotonic()
    herd, db_url = start(settings, console)
    plans = plan.plan(JOBS)
    window = settings.dispatch_window
    with psycopg.connect(db_url) as conn:
        try:
            # What the broker refuses is left due: the workers' pumps send it at their next tick.
            sending = partial(
                send, lambda: psycopg.connect(db_url), stale_after_s=settings.stale_after_s, publish=publish
            )
            sending(submit_calibration(conn, herd, plans, window, console))
            _watch(conn, [p.calibration_job for p in plans], console, timeout_s, "calibrating")
            score(console, db_url, herd, [p.calibration_job for p in plans])
            choices = choose_policies(conn, herd, plans, console)
            if any(c.state != "reused" for c in choices.values()):
                with console.status("letting the workers read the new policy versions"):
                    time.sleep(POLICY_TTL_S + 1.0)
            console.print()
            sending(submit_live(conn, herd, plans, window, console))
            # After the live jobs: the models' queues are FIFO, so the chunks run last.
            sending(longdocs.submit_long(conn, herd, window, console))
            jobs = [job for p in plans for job in (p.live_job, p.rest_job)]
            states = _watch(conn, [*jobs, longdocs.JOB], console, timeout_s, "running the rest")
            score(console, db_url, herd, jobs)
            print_comparison(conn, herd, plans, choices, console)
            console.print()
            print_summary(conn, {p.live_job: p.task for p in plans}, console)
            console.print()
            longdocs.print_panel(console, longdocs.collect(conn, herd))
            plots = [_plot(conn, settings.home, p.live_job, p.task) for p in plans]
            wall = time.monotonic() - started
        except KeyboardInterrupt:
            console.print(
                "\ninterrupted: nothing is half-written and the workers keep going in the background; "
                "run `herd demo` again to carry on, `herd down` to stop everything."
            )
            raise
    console.print(
        f"Pareto plots of the live jobs (`herd report JOB` has the full tables): "
        f"{', '.join(str(p) for p in plots)}",
        highlight=False,
    )
    console.print(f"wall time {wall:.0f}s. The local herd keeps running; `herd down` stops it.")
    print_batch_api_hint(console, localherd.herd_file(settings.home))
    return DemoResult([*(job for p in plans for job in p.jobs), longdocs.JOB], wall, states, choices)


def batch_api_hint(herd_file: Path) -> tuple[str, str]:
    """The two lines that put the OpenAI Batch API in front of the demo's herd (docs/batch-api.md)."""
    return (
        "herd keys create --owner me    # prints a key",
        f'herd --herd-file {herd_file} serve    # then OpenAI(base_url="http://127.0.0.1:8080/v1", '
        'api_key=KEY), model "herd"',
    )


def print_batch_api_hint(console: Console, herd_file: Path) -> None:
    console.print("\nThe same herd speaks the OpenAI Batch API (docs/batch-api.md):", highlight=False)
    for line in batch_api_hint(herd_file):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def _plot(conn: psycopg.Connection, home: Path, job: str, task: str) -> Path:
    """The live job's quality-against-cost plot, as `herd report --plot` draws it."""

    path = home / "demo" / f"pareto-{task}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(build(conn, job), path)
    return path


def _counts(conn: psycopg.Connection, jobs: list[str]) -> dict[str, int]:
    rows = conn.execute(
        """SELECT p.state, count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id
           WHERE j.name = ANY(%s) GROUP BY p.state""",
        (jobs,),
    ).fetchall()
    conn.commit()  # end the snapshot, so the next poll sees the workers' progress
    return {state: int(n) for state, n in rows}


def _watch(
    conn: psycopg.Connection, jobs: list[str], console: Console, timeout_s: float, verb: str
) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    with counting_bar(console, verb, "prompts", transient=False) as bar:
        counts = _counts(conn, jobs)
        task = bar.add_task("prompts", total=sum(counts.values()))
        while True:
            counts = _counts(conn, jobs)
            finished = counts.get("done", 0) + counts.get("failed", 0)
            # The total grows while running: a long document's chunks are prompts of their own.
            bar.update(task, completed=finished, total=sum(counts.values()))
            if finished == sum(counts.values()):
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"the demo jobs did not finish in {timeout_s:.0f}s: {counts}")
            time.sleep(0.5)

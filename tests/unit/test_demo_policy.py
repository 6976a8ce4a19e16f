"""`herd demo`'s policy phases in process: real Postgres, fake backends scripted per prompt, the Pipeline
driven directly (tests/support/cascade.py) where the demo waits for its workers. Calibrate on a
sample, record the version once, run the rest live under it, compare on the rest; run it all again."""

from __future__ import annotations

import io
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from herd.herdfile.model import HerdConfig
from herd.jobs.documents import Record
from herd.local.demo import compare, plan
from herd.local.demo import run as demo
from herd.local.demo.choose import TaskChoice
from herd.policy import versions as policies
from tests.support.cascade import connector, drive, load, pipeline
from tests.support.harness import Services

N = 50
KEYS = [f"q{i:02d}" for i in range(N)]
REFS = {k: f"answer {k}" for k in KEYS}
Script = dict[str, dict[str, tuple[str, float]]]


def script() -> Script:
    """small: right and sure (margin 0.8) on half the prompts, wrong and unsure (0.1) on the rest;
    large: right (margin 0.9) except every 7th prompt, so the router sees both classes per model."""
    small = {k: (REFS[k], 0.9) if i % 10 < 5 else ("wrong", 0.55) for i, k in enumerate(KEYS)}
    large = {k: ("wrong", 0.95) if i % 7 == 3 else (REFS[k], 0.95) for i, k in enumerate(KEYS)}
    return {"small": small, "large": large}


@pytest.fixture
def url(services: Services, db: psycopg.Connection) -> str:
    return services.database_url


def demo_run(url: str, herd: HerdConfig, plans: list[plan.TaskPlan], out: Console) -> dict[str, TaskChoice]:
    """What `herd demo` does after starting its herd, with the pipeline in place of the workers."""
    pipe, connect = pipeline(url, herd, script()), connector(url)
    with psycopg.connect(url) as conn:
        drive(pipe, demo.submit_calibration(conn, herd, plans, 1000, out), connect)
        demo.score(out, url, herd, [p.calibration_job for p in plans])
        choices = demo.choose_policies(conn, herd, plans, out)
        drive(pipe, demo.submit_live(conn, herd, plans, 1000, out), connect)
        demo.score(out, url, herd, [job for p in plans for job in (p.live_job, p.rest_job)])
        demo.print_comparison(conn, herd, plans, choices, out)
    return choices


def test_split_is_seeded_disjoint_and_complete() -> None:
    records = [Record(k, f"question {k}", REFS[k]) for k in KEYS]
    a, b = plan.split("qa", records), plan.split("qa", records)
    assert [r.key for r in a.sample] == [r.key for r in b.sample] and len(a.sample) == 20
    assert {r.key for r in a.sample} | {r.key for r in a.rest} == set(KEYS)
    assert not {r.key for r in a.sample} & {r.key for r in a.rest}
    assert [r.key for r in plan.split("qa", records, seed=1).sample] != [r.key for r in a.sample]
    with pytest.raises(ValueError, match="leaves a part empty"):
        plan.split("qa", records[:1])


def test_wilson_interval() -> None:
    low, high = compare.wilson(1.0, 10)
    assert high == 1.0 and 0.69 < low < 0.73  # 10 of 10 right still leaves room below
    low, high = compare.wilson(0.5, 100)
    assert 0.40 < low < 0.41 and 0.59 < high < 0.60


def test_demo_calibrates_runs_the_rest_under_the_version_and_compares(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    herd = load(tmp_path)
    records = [Record(k, f"question {k}", REFS[k], {}, f"docs:{i}") for i, k in enumerate(KEYS)]
    plans = [plan.split("qa", records)]
    p = plans[0]
    text = io.StringIO()
    choices = demo_run(url, herd, plans, Console(file=text, width=80))
    printed = text.getvalue()

    tc = choices["qa"]
    assert tc.state == "recorded" and tc.version == 1 and tc.best_alone == "large"
    # The cascade would pay here (it escalates small's unsure answers), but 20 calibration prompts
    # cannot promise it: the demo says so before the rest runs, runs large alone (which meets its
    # own target by definition) and says how many prompts would let Herd promise the saving.
    assert tc.choice.guaranteed and tc.choice.policy.models == ["large"]
    assert tc.choice.thin is not None and tc.choice.thin.policy.models == ["small", "large"]
    before = printed.index("the rest, 30 prompts never used to choose")
    assert 0 <= printed.index("Too few prompts to promise a saving") < before
    assert 0 <= printed.index("calibration prompts would likely") < before
    [version] = policies.versions(db, "qa")
    assert version.active and version.source_job == p.calibration_job
    # Every live prompt entered at the version's entry model and was decided by the version.
    rows = db.execute(
        """SELECT j.entry_model, p.policy_version, count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id
           WHERE j.name = %s GROUP BY 1, 2""",
        (p.live_job,),
    ).fetchall()
    assert rows == [(tc.choice.policy.entry, 1, len(p.rest))]

    found = compare.compare(db, herd, tc, p.live_job, p.rest_job)
    ran, by = found.live, {r.label: r for r in found.rows}
    assert {"chosen (v1)", "small alone", "large alone", "herd file cascade"} <= set(by)
    assert "oracle (hindsight)" in by and all(r.n == len(p.rest) for r in found.rows)
    # Replay equals live on the rest: the same answers, so the same accuracy.
    assert by["chosen (v1)"].accuracy == pytest.approx(by["large alone"].accuracy)
    assert by["oracle (hindsight)"].accuracy >= max(by["small alone"].accuracy, by["large alone"].accuracy)
    assert ran.versions == {1: len(p.rest)}

    assert "target: 98% of large alone" in printed and "test-part accuracy" in printed
    assert "promised at 90% confidence) meets the target" in " ".join(printed.split())
    too_long = [line for line in printed.splitlines() if len(line) > 80]
    assert not too_long, "\n".join(too_long)

    # Again: every job reused, nothing submitted, the same version kept.
    again = io.StringIO()
    choices = demo_run(url, herd, plans, Console(file=again, width=80))
    assert choices["qa"].state == "reused" and choices["qa"].version == 1
    assert len(policies.versions(db, "qa")) == 1
    assert "0 new" in again.getvalue()
    assert db.execute("SELECT count(*) FROM prompts").fetchone() == (N + len(p.rest),)

"""The pure policy core wired into the live system, in process: real Postgres, fake backends scripted
per prompt, the Pipeline driven directly (tests/support/cascade.py). Calibration jobs, replay equals
live, `herd calibrate` finds the known optimum, policy versions decide prompts, budgets hold."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from herd.cli import main
from herd.herdfile.model import HerdConfig
from herd.policy import calibration
from herd.policy.replay import replay
from herd.policy.spec import Policy
from herd.settings import get_settings
from tests.support.cascade import load, run_job, score
from tests.support.harness import Services

N = 20
KEYS = [f"q{i:02d}" for i in range(N)]
REFS = {k: f"answer {k}" for k in KEYS}


def p_of(margin: float) -> float:
    """The first-token probability whose margin against the one alternative is `margin`."""
    return (1.0 + margin) / 2.0


def script_cascade_pays() -> dict[str, dict[str, tuple[str, float]]]:
    """small: right with margin >= 0.6 on q00-q11, wrong with margin <= 0.26 on q12-q19; large: right."""
    small = {
        k: (REFS[k], p_of(0.6 + 0.03 * i)) if i < 12 else ("wrong", p_of(0.05 + 0.03 * (i - 12)))
        for i, k in enumerate(KEYS)
    }
    return {"small": small, "large": {k: (REFS[k], p_of(0.8)) for k in KEYS}}


@pytest.fixture
def url(services: Services, db: psycopg.Connection) -> str:
    return services.database_url


def cli(herd_path: Path, url: str, *args: str) -> Result:
    get_settings.cache_clear()
    env = {"HERD_DATABASE_URL": url}
    result = CliRunner().invoke(main, ["--herd-file", str(herd_path), *args], env=env, catch_exceptions=False)
    get_settings.cache_clear()
    return result


def calibrated(url: str, herd: HerdConfig, script: dict[str, dict[str, tuple[str, float]]]) -> None:
    run_job(url, herd, script, "cal", REFS, kind="calibration")
    score(url, herd, "cal")


def test_a_calibration_job_runs_every_model_on_every_prompt(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path, refine="refine: {rounds: 1}")
    script = script_cascade_pays()
    run_job(url, herd, script, "cal", REFS, kind="calibration")
    per_model = dict(
        db.execute(
            "SELECT model, count(DISTINCT prompt_id) FROM attempts WHERE stage = 'answer' GROUP BY model"
        ).fetchall()
    )
    assert per_model == {"small": N, "large": N}
    # large's refinement rounds ran too (critique + refine per prompt), and large's answer is final.
    stages = dict(
        db.execute("SELECT stage, count(*) FROM attempts WHERE model = 'large' GROUP BY stage").fetchall()
    )
    assert stages["critique"] == N and stages["refine"] == N
    assert db.execute("SELECT count(*) FROM finals WHERE model = 'large'").fetchone() == (N,)
    # The escalated flag records what the live policy would have done: the 8 unsure small answers.
    assert db.execute("SELECT count(*) FROM attempts WHERE model = 'small' AND escalated").fetchone() == (8,)
    # Loading it: both models, refinement on and off for large, every prompt.
    score(url, herd, "cal")
    with psycopg.connect(url) as conn:
        loaded = calibration.load(conn, herd, "cal", "qa")
    assert loaded.data.n == N and loaded.route == ["small", "large"] and set(loaded.data.refined) == {"large"}


def test_replay_equals_live(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    script = script_cascade_pays()
    # A policy that gets some prompts wrong both ways: escalates below 0.19 only.
    policy = Policy.from_text(
        "task: qa\nentry: small\ntiers:\n- {model: small, measure: first_token_margin, threshold: 0.19}\n"
        "- {model: large}\n"
    )
    calibrated(url, herd, script)
    with psycopg.connect(url) as conn:
        loaded = calibration.load(conn, herd, "cal", "qa")
        conn.execute(
            "INSERT INTO policies (task, version, text) VALUES ('qa', 1, %s) RETURNING id",
            (policy.to_text(),),
        )
        conn.execute("INSERT INTO active_policies (task, policy_id) SELECT 'qa', id FROM policies")
        conn.commit()
    replayed = replay(loaded.data, policy)
    keys = dict(db.execute("SELECT id, doc_key FROM prompts").fetchall())
    answers = {(keys[p], m): a for p, m, a in db.execute("SELECT prompt_id, model, answer FROM attempts")}
    expected = {
        keys[int(pid)]: (policy.tiers[int(t)].model, bool(esc))
        for pid, t, esc in zip(replayed.prompt_ids, replayed.final_tier, replayed.escalated[0], strict=True)
    }
    run_job(url, herd, script, "live", REFS)
    live = {
        key: (model, answer, escalated, version)
        for key, model, answer, escalated, version in db.execute(
            """SELECT p.doc_key, f.model, f.answer, a.escalated, p.policy_version
               FROM prompts p JOIN jobs j ON j.id = p.job_id AND j.name = 'live'
               JOIN finals f ON f.prompt_id = p.id
               JOIN attempts a ON a.prompt_id = p.id AND a.model = 'small'"""
        )
    }
    assert set(live) == set(expected)
    for key, (model, escalated) in expected.items():
        assert live[key][:3] == (model, answers[(key, model)], escalated), key
        assert live[key][3] == 1  # the version that decided it
    assert sum(esc for _, esc in expected.values()) == 5  # q12..q16 have margins below 0.19


@pytest.mark.parametrize(
    ("case", "target", "expected"),
    [
        ("cascade pays", ["--min-quality", "1"], ["small", "large"]),
        ("large is worse", ["--max-cost-per-1k", "1000"], ["small"]),
        ("small is useless", ["--min-quality", "1"], ["large"]),
        ("match large", ["--match", "large", "--at", "1"], ["small", "large"]),
    ],
)
def test_calibrate_finds_the_known_optimum(tmp_path: Path, url: str, db, case, target, expected) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    script = script_cascade_pays()
    if case == "large is worse":
        script["large"] = {k: ("nope", p_of(0.9)) for k in KEYS}
    if case == "small is useless":
        script["small"] = {k: ("wrong", p_of(0.1 + 0.04 * i)) for i, k in enumerate(KEYS)}
    calibrated(url, herd, script)
    result = cli(
        tmp_path / "herd.yaml", url, "calibrate", "cal", "--task", "qa", *target, "--method", "point"
    )
    assert result.exit_code == 0, result.output
    text = db.execute("SELECT text FROM policies WHERE task = 'qa' AND version = 1").fetchone()[0]
    chosen = Policy.from_text(text)
    assert chosen.models == expected, (case, result.output)
    assert "held-out: quality" in result.output and "95% CI" in result.output
    assert "recorded as version 1 of task qa (active" in result.output
    if expected == ["small", "large"]:
        # It escalates exactly the unsure wrong answers: threshold between 0.35 and 0.6 on the margin,
        # or the equivalent on another measure; on held-out the quality is 1.
        assert "quality 1.000" in result.output
    if case == "small is useless":
        assert chosen.entry == "large"


def test_policy_versions_list_show_diff_and_roll_back(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    calibrated(url, herd, script_cascade_pays())
    path = tmp_path / "herd.yaml"
    assert (
        cli(
            path, url, "calibrate", "cal", "--task", "qa", "--min-quality", "1", "--method", "point"
        ).exit_code
        == 0
    )
    assert cli(path, url, "calibrate", "cal", "--task", "qa", "--max-cost-per-1k", "0.0003").exit_code == 0
    listed = cli(path, url, "policy", "list").output
    assert "qa v1" in listed and "* qa v2" in listed
    assert listed.count("point estimate, no guarantee") == 2
    assert "tiers:" in cli(path, url, "policy", "show", "1", "--task", "qa").output
    diff = cli(path, url, "policy", "diff", "1", "2", "--task", "qa").output
    assert diff.startswith("--- qa v1") and "-  - model: large" in diff
    assert "version 1 is active" in cli(path, url, "policy", "activate", "1", "--task", "qa").output
    run_job(url, herd, script_cascade_pays(), "after-rollback", REFS)
    versions = db.execute(
        "SELECT DISTINCT policy_version FROM prompts p JOIN jobs j ON j.id = p.job_id "
        "WHERE j.name = 'after-rollback'"
    ).fetchall()
    assert versions == [(1,)]


def test_bad_arguments_give_one_line_and_write_nothing(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    run_job(url, herd, script_cascade_pays(), "cal", REFS, kind="calibration")  # not scored yet
    run_job(url, herd, script_cascade_pays(), "live", REFS)
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": 1, "text": "q01"}\n')
    cases = {
        "no job named 'nope'": ["calibrate", "nope", "--task", "qa", "--min-quality", "0.5"],
        "is not a calibration job": ["calibrate", "live", "--task", "qa", "--min-quality", "0.5"],
        "unknown task 'nope'": ["replay", "cal", "--task", "nope"],
        "has no scores: run `herd score cal` first": [
            "calibrate",
            "cal",
            "--task",
            "qa",
            "--min-quality",
            "1",
        ],
        "unknown model 'huge'": ["calibrate", "cal", "--task", "qa", "--match", "huge"],
        "an empty sample": [
            "submit",
            str(docs),
            "--job",
            "s",
            "--task",
            "qa",
            "--calibration",
            "--sample",
            "0",
        ],
        "give exactly one target": ["calibrate", "cal", "--task", "qa"],
    }
    for message, args in cases.items():
        result = cli(path, url, *args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    score(url, herd, "cal")
    unreachable = cli(
        path, url, "calibrate", "cal", "--task", "qa", "--min-quality", "1.5", "--method", "point"
    )
    assert unreachable.exit_code == 2 and "error: no policy reaches quality 1.5" in unreachable.output
    for args, message in (
        (["--min-quality", "1.5"], "error: a quality target must lie in [0, 1]"),
        (["--match", "large", "--confidence", "1"], "error: --confidence must lie strictly between 0 and 1"),
    ):
        bad = cli(path, url, "calibrate", "cal", "--task", "qa", *args)
        assert bad.exit_code == 2 and bad.output.strip().startswith(message), bad.output
    assert db.execute("SELECT count(*) FROM policies").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM jobs WHERE name = 's'").fetchone() == (0,)


def test_a_budget_is_never_exceeded_by_more_than_one_attempt(tmp_path: Path, url: str, db) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    # Every small answer is unsure (margins 0.02 .. 0.40), so every prompt is a candidate.
    script = {
        "small": {k: ("small says", p_of(0.02 + 0.02 * i)) for i, k in enumerate(KEYS)},
        "large": {k: (REFS[k], p_of(0.9)) for k in KEYS},
    }
    small_usd = Decimal("0.001") * Decimal("0.8") / 3600
    large_usd = Decimal("0.002") * 2 * Decimal("3.0") / 3600
    budget = N * small_usd + Decimal("5.5") * large_usd
    run_job(url, herd, script, "b", REFS, budget_usd=budget)
    spent = db.execute("SELECT sum(cost_usd) FROM attempt_costs WHERE job = 'b'").fetchone()[0]
    largest = db.execute("SELECT max(cost_usd) FROM attempt_costs WHERE job = 'b'").fetchone()[0]
    assert spent <= budget + largest
    rows = db.execute(
        "SELECT p.doc_key, f.model, p.note FROM prompts p JOIN finals f ON f.prompt_id = p.id "
        "ORDER BY p.doc_key"
    ).fetchall()
    escalated = [key for key, model, _ in rows if model == "large"]
    # The least confident first: the lowest margins are q00, q01, ...
    assert escalated == KEYS[: len(escalated)] and 4 <= len(escalated) <= 6
    assert all(note == "budget" for key, model, note in rows if model == "small")
    assert db.execute("SELECT count(*) FROM prompts WHERE state <> 'done'").fetchone() == (0,)
    status = cli(tmp_path / "herd.yaml", url, "status", "b").output
    assert "budget: spent" in status and f"kept for lack of budget: {N - len(escalated)}" in status
    export = cli(tmp_path / "herd.yaml", url, "export", "b").output
    assert export.count('"note": "budget"') == N - len(escalated)


def test_report_groups_by_version_labels_partial_rows_and_shows_each_model_alone(
    tmp_path: Path, url: str, db
) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibrated(url, herd, script_cascade_pays())
    chosen = cli(path, url, "calibrate", "cal", "--task", "qa", "--min-quality", "1", "--method", "point")
    assert chosen.exit_code == 0, chosen.output
    run_job(url, herd, script_cascade_pays(), "live", REFS)
    score(url, herd, "live")
    report = cli(path, url, "report", "live", "--scorer", "exact").output
    escalated = db.execute(
        "SELECT count(*) FROM attempts a JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id "
        "WHERE j.name = 'live' AND a.model = 'large'"
    ).fetchone()[0]
    # The later tier is marked and footnoted, and its row counts only the prompts escalated to it.
    large_row = next(line for line in report.splitlines() if "large*" in line)
    assert f" {escalated} " in large_row
    assert "* a later tier: quality and cost on the prompts escalated to it" in report
    assert "by policy version" in report and f"version 1: {N} prompts, quality 1.000" in report
    assert f"each model alone on calibration job cal ({N} prompts, every model)" in report
    assert "small: quality 0.600" in report and "large: quality 1.000" in report


def test_calibrate_promises_only_what_it_can_and_records_no_failed_guarantee_unasked(
    tmp_path: Path, url: str, db
) -> None:  # type: ignore[no-untyped-def]
    herd = load(tmp_path)
    path = tmp_path / "herd.yaml"
    calibrated(url, herd, script_cascade_pays())
    # 20 prompts cannot promise 90% quality at 90% confidence, even with large always right.
    failed = cli(path, url, "calibrate", "cal", "--task", "qa", "--min-quality", "0.9")
    assert failed.exit_code == 1, failed.output
    assert (
        "\nNo guarantee: no policy, not even large alone, passed" in failed.output
        and "not recorded: its guarantee failed" in failed.output
    )
    assert db.execute("SELECT count(*) FROM policies").fetchone() == (0,)
    anyway = cli(path, url, "calibrate", "cal", "--task", "qa", "--min-quality", "0.9", "--activate-anyway")
    assert anyway.exit_code == 0 and "recorded as version 1 of task qa (active" in anyway.output
    # Matching large: large alone meets 98% of itself by definition; the cascade that equals large on
    # these prompts is too thin to promise, and Herd says about how many prompts would do.
    match = cli(path, url, "calibrate", "cal", "--task", "qa", "--match", "large")
    assert match.exit_code == 0, match.output
    assert "GUARANTEE: large alone meets quality >= 98% of large alone by definition" in match.output
    assert "TOO THIN TO SAVE: small (" in match.output and "calibration prompts (" in match.output
    assert "method: guarantee at 90% confidence (Learn then Test" in match.output
    estimates = db.execute("SELECT estimates FROM policies WHERE version = 2").fetchone()[0]
    assert estimates["method"] == "guarantee" and estimates["confidence"] == 0.9
    assert estimates["guaranteed"] is True and estimates["bound"] == 0.0
    assert estimates["too_thin"]["prompts_needed"] > N
    listed = cli(path, url, "policy", "list", "--task", "qa").output.splitlines()
    assert "NO guarantee at 90% (recorded anyway)" in listed[0]
    assert "guaranteed at 90%, bound +0.000" in listed[1] and listed[1].startswith("*")

"""Stored versions that name a model the herd file lacks are refused where they are used, with one line
naming both: at activation, at submit, at the worker's escalation step, in the budget's release and
in the pump's sweep; and they show in `herd status`, the worker log and a metric. Real Postgres, the
pipeline in process with scripted backends (tests/support/cascade.py)."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from herd.cli import main
from herd.herdfile.model import HerdConfig, load_herd
from herd.herdfile.references import stale_reference
from herd.jobs.documents import Record
from herd.jobs.references import fail_unknown_queued, stale_versions, waiting_at_unknown
from herd.jobs.submit import submit
from herd.ledger.steps import reclaim_stale
from herd.observability.metrics import read_ledger, stale_metric
from herd.policy import versions as policies
from herd.policy.active import herd_policy
from herd.settings import get_settings
from herd.vocabulary import StepKey
from tests.support.cascade import HERD, connector, drive, load, pipeline
from tests.support.harness import Services

KEYS = [f"q{i:02d}" for i in range(6)]
UNSURE = {"small": {k: ("small says", 0.55) for k in KEYS}, "big": {k: ("big says", 0.99) for k in KEYS}}
GONE = "names model 'large', which the herd file does not define"


@pytest.fixture
def url(services: Services, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> str:
    # `herd submit` publishes: to the harness's broker, never this machine's.
    monkeypatch.setenv("HERD_BROKER_URL", services.broker_url)
    return services.database_url


def renamed(tmp_path: Path) -> tuple[Path, HerdConfig]:
    """The herd file after the big model was swapped: `large` is now `big` (small's `next` follows)."""
    path = tmp_path / "v2" / "herd.yaml"
    path.parent.mkdir()
    path.write_text((HERD % {"refine": ""}).replace("large", "big"))
    return path, load_herd(path)


def cli(herd_path: Path, url: str, *args: str) -> Result:
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["--herd-file", str(herd_path), *args], env={"HERD_DATABASE_URL": url})
    get_settings.cache_clear()
    return result


def submitted(url: str, herd: HerdConfig, job: str, **kw: object) -> list[tuple[int, str, str, int]]:
    records = [Record(k, f"question {k}", None, {}, f"t:{i}") for i, k in enumerate(KEYS)]
    with psycopg.connect(url) as conn:
        return submit(conn, herd, job=job, task="qa", records=records, window=100, **kw).dispatched  # type: ignore[arg-type]


def record_v1(url: str, herd: HerdConfig) -> None:
    """Policy v1 of task qa, small -> large, active (what `herd calibrate` records)."""
    with psycopg.connect(url) as conn:
        policies.record(conn, "qa", herd_policy(herd, "qa").to_text(), None, {})


def test_the_shared_check_names_the_holder_and_what_the_herd_file_lacks(tmp_path: Path) -> None:
    herd = load(tmp_path)
    assert stale_reference(herd, "policy", "v1", "qa", ["small", "large"]) is None
    missing = stale_reference(herd, "policy", "the active policy v1 of task 'qa'", "qa", ["small", "huge"])
    assert (
        str(missing)
        == "the active policy v1 of task 'qa' names model 'huge', which the herd file does not define"
    )
    task = stale_reference(herd, "router", "router v2", "gone", ["small"])
    assert (
        task is not None and str(task) == "router v2 names task 'gone', which the herd file does not define"
    )
    # A router's models must also be on the task's route (it picks the entry the cascade climbs from).
    path = tmp_path / "three.yaml"
    path.write_text((HERD % {"refine": ""}) + "  other:\n    kind: qa\n    entry: large\n")
    three = load_herd(path)
    off = stale_reference(three, "router", "router v1", "other", ["small", "large"], route_only=True)
    assert off is not None and "model 'small', not on the task's route ['large']" in str(off)


def test_a_policy_naming_a_removed_model_fails_its_escalations_with_the_reason(
    tmp_path: Path, url: str, db: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    herd1 = load(tmp_path)
    record_v1(url, herd1)
    dispatched = submitted(url, herd1, "before")  # submitted while `large` still existed
    path2, herd2 = renamed(tmp_path)
    with caplog.at_level(logging.WARNING, logger="herd.cascade.pipeline"):
        drive(pipeline(url, herd2, UNSURE), dispatched, connector(url))
    rows = db.execute("SELECT state, model, error FROM prompts ORDER BY id").fetchall()
    reason = f"small answer: cannot escalate: the active policy v1 of task 'qa' {GONE}"
    assert all(r[0] == "failed" and r[1] == "small" and r[2].startswith(reason) for r in rows), rows
    assert db.execute("SELECT count(*) FROM attempts WHERE model <> 'small'").fetchone() == (0,)
    assert sum(reason in r.getMessage() for r in caplog.records) == len(KEYS)  # the worker log
    # `herd status` names both; so does the metric, by kind and task.
    status = cli(path2, url, "status", "before")
    assert f"stale: the active policy v1 of task 'qa' {GONE}" in status.output, status.output
    assert f"{len(KEYS)} x {reason}" in status.output
    with psycopg.connect(url, autocommit=True) as conn:
        snap = read_ledger(conn, herd2)
    assert snap.stale is not None
    samples = {(s.labels["kind"], s.labels["task"]): s.value for s in stale_metric(snap.stale).samples}
    assert samples[("policy", "qa")] == 1 and samples[("router", "")] == 0
    # With the herd file that has `large`, nothing is stale.
    with psycopg.connect(url) as conn:
        assert stale_versions(conn, herd1) == [] and waiting_at_unknown(conn, herd1) == []


def test_submit_and_activation_refuse_a_policy_naming_a_removed_model(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    herd1 = load(tmp_path)
    record_v1(url, herd1)
    path2, _ = renamed(tmp_path)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(f'{{"id": "{k}", "text": "question {k}"}}\n' for k in KEYS))
    sub = cli(path2, url, "submit", str(docs), "--job", "after", "--task", "qa")
    assert sub.exit_code == 2, sub.output
    assert sub.output.strip() == (
        f"error: the active policy v1 of task 'qa' {GONE}: "
        "activate another version, or `herd policy deactivate --task qa`"
    )
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert cli(path2, url, "policy", "deactivate", "--task", "qa").exit_code == 0
    act = cli(path2, url, "policy", "activate", "1", "--task", "qa")
    assert act.exit_code == 2 and act.output.startswith(f"error: policy v1 of task 'qa' {GONE}"), act.output
    assert db.execute("SELECT count(*) FROM active_policies").fetchone() == (0,)  # rolled back
    assert cli(tmp_path / "herd.yaml", url, "policy", "activate", "1", "--task", "qa").exit_code == 0
    # Without the stale policy the renamed herd's own cascade runs: submit goes through.
    assert cli(path2, url, "policy", "deactivate", "--task", "qa").exit_code == 0
    assert cli(path2, url, "submit", str(docs), "--job", "after", "--task", "qa").exit_code == 0


def test_the_sweep_and_the_budget_release_end_waits_at_a_removed_model(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    herd1 = load(tmp_path)
    record_v1(url, herd1)
    # A budget job on the old herd file: every small answer is unsure; the first candidate goes on to
    # `large` as the budget's probe and the others are held.
    dispatched = submitted(url, herd1, "capped", budget_usd=Decimal("1"))
    pipe1 = pipeline(url, herd1, {"small": UNSURE["small"], "large": UNSURE["big"]})
    probe = [
        d for pid, model, stage, r in dispatched for d in pipe1.run(pid, StepKey(model, stage, r)).dispatches
    ]
    assert [d[1] for d in probe] == ["large"]
    # The probe reserves what is left of the budget (nothing spent: the fake calls cost ~0).
    reserved = db.execute("SELECT reserved_usd FROM prompts WHERE model = 'large'").fetchone()[0]  # type: ignore[index]
    assert Decimal("0.99") < reserved <= 1
    assert (
        "reserved for escalations in flight: " in cli(tmp_path / "herd.yaml", url, "status", "capped").output
    )
    assert db.execute("SELECT count(*) FROM prompts WHERE state = 'held'").fetchone() == (len(KEYS) - 1,)
    _, herd2 = renamed(tmp_path)  # `large` is gone before its worker read the probe
    with psycopg.connect(url) as conn:
        waiting = [str(r) for r in waiting_at_unknown(conn, herd2)]
    assert waiting == [f"job 'capped': 1 queued prompt {GONE}"]
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        assert fail_unknown_queued(conn, herd2, 3600.0) == 0  # not stale yet: a newer worker may read it
        assert fail_unknown_queued(conn, herd2, 0.0) == 1
        assert reclaim_stale(conn, 0.0, 100) == []  # nothing left to re-send to herd.large
    error = db.execute("SELECT error FROM prompts WHERE state = 'failed'").fetchone()
    assert error == (f"the prompt's step (sent there by policy v1 of task 'qa') {GONE}",)
    # The job is idle now: its held candidates cannot escalate either, and fail with the same reason.
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        assert pipeline(url, herd2, UNSURE).release_budgets(conn) == []
    rows = db.execute(
        "SELECT state, error FROM prompts WHERE state <> 'failed' OR error NOT LIKE 'the prompt%'"
    )
    held = rows.fetchall()
    assert len(held) == len(KEYS) - 1
    assert all(s == "failed" and f"the active policy v1 of task 'qa' {GONE}" in e for s, e in held), held

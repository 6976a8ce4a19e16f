"""The nightly audit: its sample (seeded by job and document id), its exact interval, and an audited job
run in process on real Postgres (tests/support/cascade.py): the reference's answers are its own, the
cascade's are unchanged, and `herd status` / `herd report` show the estimate beside the promise."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pytest
from scipy.stats import beta

from herd.herdfile.model import ConfigError, TaskConfig, load_herd
from herd.input_errors import InputError
from herd.jobs.documents import Record
from herd.jobs.submit import submit
from herd.policy import versions as policies
from herd.quality.audit import Audit, audit_job_name, audited, check_rate, resolve
from herd.quality.scorers import agree
from herd.reporting.audit import clopper_pearson, estimate, lines
from tests.support.cascade import CUT_OFF, HERD, HTTP_500, connector, drive, load, pipeline, record_guaranteed
from tests.support.harness import Services
from tests.unit.test_policy_live import cli, p_of

# --- the sample ------------------------------------------------------------------------------------


def test_the_sample_is_the_same_on_every_call_and_in_any_order() -> None:
    keys = [f"doc-{i}" for i in range(5000)]
    first = {k for k in keys if audited("nightly", k, 0.1)}
    again = {k for k in reversed(keys) if audited("nightly", k, 0.1)}
    assert first == again
    # A higher rate keeps every prompt a lower one sampled: raising the rate only adds prompts.
    assert first <= {k for k in keys if audited("nightly", k, 0.3)}
    # Another job draws another sample.
    other = {k for k in keys if audited("nightly-2", k, 0.1)}
    assert other != first


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.5])
def test_each_prompt_is_sampled_with_probability_rate(rate: float) -> None:
    """Over 40 seeded jobs of 2,000 prompts: the mean share is within 4 standard errors of the rate,
    and two jobs' samples overlap as independent draws would (rate squared)."""
    n, jobs = 2000, 40
    shares = []
    samples = []
    for j in range(jobs):
        sample = np.array([audited(f"job-{j}", f"k{i}", rate) for i in range(n)])
        shares.append(sample.mean())
        samples.append(sample)
    se = math.sqrt(rate * (1 - rate) / (n * jobs))
    print(f"rate {rate}: mean share {np.mean(shares):.4f} (se {se:.4f})")
    assert abs(np.mean(shares) - rate) < 4 * se
    both = np.mean([(samples[j] & samples[j + 1]).mean() for j in range(jobs - 1)])
    assert abs(both - rate**2) < 4 * math.sqrt(rate**2 * (1 - rate**2) / (n * (jobs - 1)))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_a_bad_rate_is_one_clear_error(bad: float) -> None:
    with pytest.raises(InputError, match="--audit must be a share of the job's prompts between 0 and 1"):
        check_rate(bad)


def test_the_audit_a_job_carries(tmp_path: Path) -> None:
    herd = load(tmp_path)
    assert resolve(herd, "qa", None, None) is None
    assert resolve(herd, "qa", 0.0, None) is None  # 0 turns it off
    assert resolve(herd, "qa", 0.02, None) == Audit(0.02, "large")  # the route's last model
    assert resolve(herd, "qa", 0.5, "small") == Audit(0.5, "small")
    with pytest.raises(InputError, match="'huge' is not in the herd file"):
        resolve(herd, "qa", 0.5, "huge")
    with pytest.raises(InputError, match="only a live job can be audited"):
        resolve(herd, "qa", 0.5, None, kind="calibration")
    with pytest.raises(InputError, match="needs an audit rate"):
        resolve(herd, "qa", None, "small")
    path = tmp_path / "herd.yaml"
    path.write_text(HERD % {"refine": ""} + "audit: {rate: 0.05, reference: small}\n")
    defaulted = load_herd(path)
    assert resolve(defaulted, "qa", None, None) == Audit(0.05, "small")
    assert resolve(defaulted, "qa", 0.0, None) is None
    assert resolve(defaulted, "qa", 0.1, "large") == Audit(0.1, "large")


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ("audit: {rate: 1.5}", "audit.rate: Input should be less than or equal to 1"),
        ("audit: {rate: 0}", "audit.rate: Input should be greater than 0"),
        ("audit: {rate: 0.1, reference: huge}", "audit.reference: unknown model 'huge'"),
    ],
)
def test_a_bad_audit_in_the_herd_file_names_file_line_and_key(
    tmp_path: Path, audit: str, message: str
) -> None:
    path = tmp_path / "herd.yaml"
    text = HERD % {"refine": ""} + audit + "\n"
    path.write_text(text)
    line = text.count("\n")
    with pytest.raises(ConfigError, match=f"{path}:{line}: {message}"):
        load_herd(path)


# --- the interval ----------------------------------------------------------------------------------


def test_clopper_pearson_is_the_beta_quantile_interval() -> None:
    """Clopper & Pearson (1934): low = Beta(a/2; k, n-k+1), high = Beta(1-a/2; k+1, n-k), 0 and 1 at
    the ends."""
    for k, n in [(0, 10), (3, 10), (10, 10), (45, 50), (180, 200)]:
        low, high = clopper_pearson(k, n)
        want_low = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
        want_high = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
        assert low == pytest.approx(want_low, abs=1e-9) and high == pytest.approx(want_high, abs=1e-9)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(3, 2)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.98])
@pytest.mark.parametrize("n", [10, 40, 200])
def test_the_interval_covers_the_true_share_at_least_95_percent_of_the_time(p: float, n: int) -> None:
    """Measured over 4,000 seeded samples per (p, n): coverage >= 95% less three standard errors of the
    measurement; and a drop flag (promise above the interval) when the promise is kept stays rare."""
    rng = np.random.default_rng(int(p * 1000) + n)
    draws = rng.binomial(n, p, size=4000)
    intervals = {k: clopper_pearson(int(k), n) for k in np.unique(draws)}
    covered = np.mean([intervals[k][0] <= p <= intervals[k][1] for k in draws])
    false_drop = np.mean([intervals[k][1] < p for k in draws])
    print(f"p={p} n={n}: coverage {covered:.4f}, false drop flag {false_drop:.4f}")
    assert covered >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / 4000)
    assert false_drop <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / 4000)


def test_agreement_compares_labels_for_a_classify_task_and_normalized_text_otherwise() -> None:
    sentiment = TaskConfig(kind="classify", labels=["positive", "negative"])
    assert agree(sentiment, "Positive.", "positive, clearly")
    assert not agree(sentiment, "positive", "negative")
    assert not agree(sentiment, "no idea", "no idea")  # no label: not an agreement
    qa = TaskConfig(kind="qa")
    assert agree(qa, "Bogotá.", " bogota")
    assert not agree(qa, "Paris", "Lyon")


# --- an audited job in process -----------------------------------------------------------------------

N = 40
KEYS = [f"q{i:02d}" for i in range(N)]


def script(small_right: set[str]) -> dict[str, dict[str, tuple[str, float]]]:
    """small is sure everywhere (never escalates), right on `small_right`; large is right everywhere."""
    return {
        "small": {k: (f"answer {k}" if k in small_right else "wrong", p_of(0.9)) for k in KEYS},
        "large": {k: (f"answer {k}", p_of(0.9)) for k in KEYS},
    }


def run(
    url: str,
    tmp_path: Path,
    job: str,
    keys: list[str],
    s: dict[str, dict[str, tuple[str, float]]],
    *,
    references: bool,
    audit: Audit | None,
) -> int:
    herd = load(tmp_path)
    records = [Record(k, f"question {k}", f"answer {k}" if references else None, {}, f"t:{k}") for k in keys]
    with psycopg.connect(url) as conn:
        result = submit(conn, herd, job=job, task="qa", records=records, window=1000, audit=audit)
    drive(pipeline(url, herd, s), result.dispatched, connector(url))
    return result.audited


@pytest.fixture
def url(services: Services, db: psycopg.Connection) -> str:
    return services.database_url


def finals(db: psycopg.Connection, job: str) -> dict[str, tuple[str, str]]:
    rows = db.execute(
        """SELECT p.doc_key, f.model, f.answer FROM finals f JOIN prompts p ON p.id = f.prompt_id
           JOIN jobs j ON j.id = p.job_id WHERE j.name = %s""",
        (job,),
    ).fetchall()
    return {k: (m, a) for k, m, a in rows}


def test_an_audited_job_keeps_its_answers_and_the_reference_answers_its_sample_alone(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    s = script(set(KEYS[:30]))
    run(url, tmp_path, "plain", KEYS, s, references=False, audit=None)
    added = run(url, tmp_path, "night", KEYS, s, references=False, audit=Audit(0.5, "large"))
    sample = {k for k in KEYS if audited("night", k, 0.5)}
    assert added == len(sample) and 0 < len(sample) < N
    # The cascade's final answers are those of the same job unaudited.
    assert finals(db, "night") == finals(db, "plain")
    # The reference answered exactly the sample, alone: one answer attempt each, no escalation.
    audit_rows = db.execute(
        """SELECT p.doc_key, a.model, a.stage, a.escalated FROM attempts a
           JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id WHERE j.name = %s""",
        (audit_job_name("night"),),
    ).fetchall()
    assert sorted(r[0] for r in audit_rows) == sorted(sample)
    assert {(m, stage) for _, m, stage, _ in audit_rows} == {("large", "answer")}
    # The audit's attempts are the audit job's cost, apart from the job's own.
    costs: dict[str, Decimal] = dict(
        db.execute(
            "SELECT job, sum(cost_usd) FROM attempt_costs WHERE job IN ('night', %s) GROUP BY job",
            (audit_job_name("night"),),
        ).fetchall()
    )
    assert costs[audit_job_name("night")] > 0 and costs["night"] > 0
    # Re-submitting adds nothing, to the job or its sample.
    assert run(url, tmp_path, "night", KEYS, s, references=False, audit=Audit(0.5, "large")) == 0
    with pytest.raises(InputError, match="already audited at rate 0.5 by large"):
        run(url, tmp_path, "night", KEYS, s, references=False, audit=Audit(0.2, "large"))

    herd = load(tmp_path)
    with psycopg.connect(url) as conn:
        job_id = conn.execute("SELECT id FROM jobs WHERE name = 'night'").fetchone()[0]  # type: ignore[index]
        est = estimate(conn, job_id, "night", lambda: herd.tasks)
    assert est is not None and len(est.rows) == 1
    row = est.rows[0]
    agreeing = sum(1 for k in sample if k in KEYS[:30])
    assert (row.measure, row.prompts, row.hits) == ("agreement", len(sample), agreeing)
    assert (row.low, row.high) == clopper_pearson(agreeing, len(sample))
    assert row.promised is None and not row.drop  # the herd file decided: no promise to compare


def test_status_and_report_show_the_estimate_beside_the_promise_and_flag_a_drop(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    """A policy version promising quality >= 0.9 decides a job where small is right on 10 of 40: the
    audit (every prompt, references known) measures accuracy 0.25 and flags the drop."""
    herd_path = tmp_path / "herd.yaml"
    load(tmp_path)
    policy = (
        "task: qa\nentry: small\ntiers:\n  - model: small\n    measure: first_token_margin\n"
        "    threshold: 0.5\n  - model: large\n"
    )
    with psycopg.connect(url) as conn:
        record_guaranteed(conn, policy, bound=0.01)
    run(url, tmp_path, "night", KEYS, script(set(KEYS[:10])), references=True, audit=Audit(1.0, "large"))
    status = cli(herd_path, url, "status", "night")
    assert status.exit_code == 0, status.output
    low, high = clopper_pearson(10, N)
    assert f"policy version 1: accuracy 0.250 [{low:.3f}, {high:.3f}]" in status.output
    assert "promised 0.900  DROP" in status.output
    assert "large alone: accuracy 1.000" in status.output
    assert "quality >= 0.9, guaranteed at 90%" in status.output
    report = cli(herd_path, url, "report", "night", "--format", "json")
    assert report.exit_code == 0, report.output
    doc = json.loads(report.stdout)["audit"]
    assert doc["drop"] is True and doc["rate"] == 1.0 and doc["reference"] == "large"
    assert doc["rows"][0]["hits"] == 10 and doc["rows"][0]["prompts"] == N
    assert doc["cost_usd"] > 0
    table = cli(herd_path, url, "report", "night")
    assert "DROP: the promise lies above the interval" in table.output


def test_calibrate_from_audit_rechooses_the_entry_threshold_on_the_audit_sample(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    """small is sure and right on half the prompts, unsure and wrong on the other half; the audit
    (every prompt) holds small's measures and large's answers: `herd calibrate --from-audit` chooses
    small escalating its unsure answers to large, scored by agreement (no references), and records it."""
    keys = [f"q{i:02d}" for i in range(60)]
    s = {
        "small": {
            k: (f"answer {k}", p_of(0.9)) if i % 2 else ("wrong", p_of(0.1)) for i, k in enumerate(keys)
        },
        "large": {k: (f"answer {k}", p_of(0.9)) for k in keys},
    }
    herd_path = tmp_path / "herd.yaml"
    run(url, tmp_path, "unaudited", keys, s, references=False, audit=None)
    refused = cli(
        herd_path, url, "calibrate", "unaudited", "--task", "qa", "--from-audit", "--match", "large"
    )
    assert refused.exit_code == 2 and "job 'unaudited' has no audit" in refused.output
    run(url, tmp_path, "night", keys, s, references=False, audit=Audit(1.0, "large"))
    chosen = cli(
        herd_path,
        url,
        "calibrate",
        "night",
        "--task",
        "qa",
        "--from-audit",
        "--match",
        "large",
        "--at",
        "0.9",
    )
    assert chosen.exit_code == 0, chosen.output
    assert "(scorer audit-agreement)" in chosen.output
    assert "recorded as version 1 of task qa (active" in chosen.output
    text = policies.versions(db, "qa")[0].text
    assert "model: small" in text and "model: large" in text and "threshold" in text


def test_a_cut_off_or_failed_reference_answer_is_left_out_never_a_disagreement(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    """large's calls fail (HTTP 500, retries spent) on 5 audited prompts and come back cut off on 5
    more: those 10 are left out and counted; the estimate is on the 30 others, where small agrees."""
    s = script(set(KEYS))
    s["large"] = {
        k: (HTTP_500, 0.0) if i < 5 else (CUT_OFF + f"answer {k}", p_of(0.9)) if i < 10 else s["large"][k]
        for i, k in enumerate(KEYS)
    }
    run(url, tmp_path, "night", KEYS, s, references=False, audit=Audit(1.0, "large"))
    herd = load(tmp_path)
    with psycopg.connect(url) as conn:
        job_id = conn.execute("SELECT id FROM jobs WHERE name = 'night'").fetchone()[0]  # type: ignore[index]
        est = estimate(conn, job_id, "night", lambda: herd.tasks)
    assert est is not None and est.left_out == 10
    assert [(r.prompts, r.hits) for r in est.rows] == [(N - 10, N - 10)]


def test_a_bad_audit_on_the_command_line_is_one_error_and_writes_nothing(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    load(tmp_path)
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "q00", "text": "question q00"}\n')
    for args, message in [
        (("--audit", "2"), "--audit must be a share of the job's prompts between 0 and 1"),
        (("--audit", "0.1", "--audit-reference", "huge"), "'huge' is not in the herd file"),
        (("--audit", "0.1", "--calibration"), "only a live job can be audited"),
    ]:
        result = cli(tmp_path / "herd.yaml", url, "submit", str(path), "--job", "x", "--task", "qa", *args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_a_version_without_a_promise_is_checked_against_its_calibration_or_says_it_cannot_be(
    tmp_path: Path, url: str, db: psycopg.Connection
) -> None:
    """Small is right on 10 of 40. A version recorded before promises were (its held-out quality
    0.95 [0.90, 0.99] on 60 prompts) is checked against that interval's lower end: the drop is
    flagged. A version with nothing recorded says plainly there is nothing to check, and never flags."""
    herd_path = tmp_path / "herd.yaml"
    load(tmp_path)
    policy = (
        "task: qa\nentry: small\ntiers:\n  - model: small\n    measure: first_token_margin\n"
        "    threshold: 0.5\n  - model: large\n"
    )
    older = {
        "target": "quality >= 0.9",
        "method": "point",
        "held_out": {"prompts": 60, "quality": {"value": 0.95, "low": 0.9, "high": 0.99}},
    }
    low, high = clopper_pearson(10, N)
    tasks = load(tmp_path).tasks
    for job, estimates, checked in (("old", older, 0.9), ("bare", {}, None)):
        with psycopg.connect(url) as conn:
            policies.record(conn, "qa", policy, None, estimates)
        run(url, tmp_path, job, KEYS, script(set(KEYS[:10])), references=True, audit=Audit(1.0, "large"))
        with psycopg.connect(url) as conn:
            job_id = conn.execute("SELECT id FROM jobs WHERE name = %s", (job,)).fetchone()[0]  # type: ignore[index]
            est = estimate(conn, job_id, job, lambda: tasks)
        assert est is not None and len(est.rows) == 1
        row = est.rows[0]
        assert row.promised is None and row.checked == checked and (row.low, row.high) == (low, high)
        status = cli(herd_path, url, "status", job)
        assert status.exit_code == 0, status.output
        if checked is not None:
            assert row.basis == "calibration" and row.drop and est.drop
            assert (
                "calibration's held-out low 0.900  DROP: the calibration's held-out interval" in status.output
            )
            assert "no promise recorded: checked against its calibration's held-out quality, 0.950" in (
                status.output
            )
        else:
            assert row.basis == "none" and not row.drop
            assert "no promise to check against" in status.output
            assert "nothing to check against (no drop can be flagged)" in status.output
        report = json.loads(cli(herd_path, url, "report", job, "--format", "json").stdout)["audit"]
        assert report["drop"] is (checked is not None) and report["rows"][0]["basis"] == row.basis


def test_the_herd_files_own_cascade_has_no_promise_to_check(tmp_path: Path, url: str) -> None:
    run(url, tmp_path, "plain", KEYS, script(set(KEYS[:10])), references=True, audit=Audit(1.0, "large"))
    herd = load(tmp_path)
    with psycopg.connect(url) as conn:
        job_id = conn.execute("SELECT id FROM jobs WHERE name = 'plain'").fetchone()[0]  # type: ignore[index]
        est = estimate(conn, job_id, "plain", lambda: herd.tasks)
    assert est is not None and [(r.version, r.basis, r.drop) for r in est.rows] == [(None, "none", False)]
    assert "no promise to check against" in "\n".join(lines(est))

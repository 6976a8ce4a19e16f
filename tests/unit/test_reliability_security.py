"""Security basics: no credential in logs, stored errors or tracebacks; herd_reader cannot write; CSV
exports cannot carry spreadsheet formulas. (Flower's loopback rule: tests/test_reliability_flower.py.)"""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from herd.jobs.documents import Record
from herd.jobs.spreadsheet import safe_cell
from herd.jobs.status import export
from herd.jobs.submit import submit
from herd.ledger import steps as ledger
from herd.redact import install_log_redaction, mask_url, redact, register, register_url
from tests.integration.test_cascade import jsonl
from tests.support.harness import herd_yaml, wait_for


def test_urls_lose_their_password_and_secret_parameters() -> None:
    assert mask_url("postgresql://herd:pw@db:5432/herd") == "postgresql://herd:***@db:5432/herd"
    assert mask_url("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask_url("https://api.example/v1?api_key=k&model=m&token=t") == (
        "https://api.example/v1?api_key=***&model=m&token=***"
    )
    assert mask_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    text = "HTTP 500 from https://bob:hunter2@gpu-7/v1: failed; retry postgresql://u:x1y2@h/d"
    assert redact(text) == "HTTP 500 from https://bob:***@gpu-7/v1: failed; retry postgresql://u:***@h/d"


def test_registered_secrets_are_masked_anywhere() -> None:
    register("sk-test-registered-key")
    register_url("postgresql://u:pass word with spaces@h/d")
    assert redact("echo: Bearer sk-test-registered-key") == "echo: Bearer ***"
    assert redact('unexpected spaces found in "pass word with spaces"') == 'unexpected spaces found in "***"'
    register("ab")  # too short to mask without mangling ordinary words
    assert redact("about") == "about"


def test_log_records_and_tracebacks_are_redacted(caplog) -> None:
    install_log_redaction()
    register("sk-test-log-key")
    log = logging.getLogger("herd.test.redaction")
    with caplog.at_level(logging.INFO, logger="herd.test.redaction"):
        log.info("calling %s with %s", "https://u:hunter2@gpu/v1", "sk-test-log-key")
        try:
            raise RuntimeError("cannot connect to postgresql://herd:hunter2@db/herd")
        except RuntimeError:
            log.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "hunter2" not in text and "sk-test-log-key" not in text
    assert "https://u:***@gpu/v1" in text and "postgresql://herd:***@db/herd" in text


def test_the_cli_never_prints_a_database_password(make_herd, services) -> None:
    parts = urlsplit(services.database_url)
    host = parts.hostname or "127.0.0.1"
    # psycopg quotes a malformed URL back, password and all; an unreachable server too must not leak it.
    for url in (f"postgresql://herd:s3cret pw@{host}:1/x", "postgresql://herd:s3cretpw@127.0.0.1:1/x"):
        herd = make_herd(HERD_DATABASE_URL=url)
        result = herd.cli("status", "nightly", check=False, timeout=60)
        assert result.returncode != 0
        assert "s3cret" not in result.stderr + result.stdout, result.stderr
    assert urlunsplit(parts)  # the real URL is untouched


def test_endpoint_credentials_never_reach_the_ledger_or_the_worker_log(
    make_herd, db, double, tmp_path
) -> None:
    double.script([{"match": "", "text": "x", "errors": [422]}])
    secret_url = double.model_url("small").replace("http://", "http://bob:hunter2pw@") + "/v1"
    text = herd_yaml(double).replace(f"{double.model_url('small')}/v1", secret_url)
    text = text.replace(
        "    max_in_flight: 4\n", "    api_key_env: HERD_TEST_SECRET_KEY\n    max_in_flight: 4\n", 1
    )
    herd = make_herd(text, HERD_TEST_SECRET_KEY="sk-never-logged-4242")
    herd.start_worker("small")
    herd.cli(
        "submit", str(jsonl(tmp_path / "s.jsonl", [{"id": 1, "text": "q"}])), "--job", "s", "--task", "qa"
    )
    assert wait_for(db, "s") == {"failed": 1}
    stored = db.execute(
        "SELECT p.error, a.error, a.endpoint FROM prompts p JOIN attempts a ON a.prompt_id = p.id"
    ).fetchone()
    assert stored is not None and "HTTP 422" in stored[0]
    assert "bob:***@" in stored[2]
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
    for secret in ("hunter2pw", "sk-never-logged-4242"):
        assert all(secret not in (value or "") for value in stored)
        assert secret not in logs


def test_herd_reader_can_read_but_not_write(services, db) -> None:
    exists = db.execute("SELECT 1 FROM pg_roles WHERE rolname = 'herd_reader'").fetchone()
    if exists is None:
        pytest.skip("the migrating user may not create roles here")
    probe = f"herd_reader_probe_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE ROLE {probe} LOGIN PASSWORD 'probe-pw' IN ROLE herd_reader")
    try:
        parts = urlsplit(services.database_url)
        netloc = f"{probe}:probe-pw@{parts.hostname}:{parts.port or 5432}"
        with psycopg.connect(urlunsplit(parts._replace(netloc=netloc)), autocommit=True) as reader:
            assert reader.execute("SELECT count(*) FROM prompts").fetchone() == (0,)
            reader.execute("SELECT * FROM job_costs LIMIT 1")  # the reporting views
            for statement in (
                "INSERT INTO jobs (name, task, entry_model) VALUES ('x', 'qa', 'small')",
                "UPDATE prompts SET state = 'done'",
                "DELETE FROM attempts",
                "TRUNCATE finals",
                "CREATE TABLE herd_reader_was_here (id int)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute(statement)
    finally:
        db.execute(f"DROP ROLE {probe}")


def test_csv_exports_neutralise_formulas(services, db, tmp_path: Path) -> None:
    answers = ['=HYPERLINK("http://evil","x")', "+1+1", "-2", "@SUM(A1)", "\t=1", "plain = text"]
    herd_file = tmp_path / "herd.yaml"
    herd_file.write_text(
        "models:\n  m: {protocol: openai, endpoints: http://127.0.0.1:9}\ntasks:\n  qa: {kind: qa}\n"
    )
    from herd.herdfile.model import load_herd

    records = [
        Record(key=f"=cmd|{i}", text=f"q {i}", reference=None, source=f"x:{i}") for i in range(len(answers))
    ]
    with psycopg.connect(services.database_url) as conn:
        submit(conn, load_herd(herd_file), job="x", task="qa", records=records, window=100)
    for prompt_id, answer in enumerate(answers, start=1):
        attempt = ledger.insert_attempt(
            db,
            ledger.NewAttempt(
                prompt_id=prompt_id,
                model="m",
                stage="answer",
                round=0,
                status="ok",
                answer=answer,
                first_token_margin=-0.0,
                finished_at=datetime.now(UTC),
            ),
        )
        ledger.finalize(db, prompt_id, attempt.id, "m", answer)
    out = io.StringIO()
    with db.transaction():  # the export streams through a server-side cursor
        export(db, "x", out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["answer"] for r in rows] == ["'" + a for a in answers[:5]] + ["plain = text"]
    assert all(r["id"].startswith("'=cmd|") for r in rows)
    out = io.StringIO()
    with db.transaction():
        export(db, "x", out, "jsonl")
    assert [json.loads(line)["answer"] for line in out.getvalue().splitlines()] == answers
    assert safe_cell(-0.5) == -0.5 and safe_cell(None) is None

"""What the CLI says when the environment is wrong, as a user meets it: a database or broker that
cannot be reached, an output path that cannot be written, prompts that failed. One line each, the
right exit status, the password masked, nothing half-written. The real `herd` command, real Postgres."""

from __future__ import annotations

from pathlib import Path

import psycopg


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_an_unreachable_database_is_one_line_with_the_password_masked(make_herd) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd(HERD_DATABASE_URL="postgresql://herd:s3cret-pw@127.0.0.1:9/herd")
    for args in (("status", "any"), ("report", "any"), ("export", "any")):
        result = herd.cli(*args, check=False)
        assert result.returncode == 1, result.stderr
        line = _one_error_line(result.stderr)
        assert "cannot reach the database at postgresql://herd:***@127.0.0.1:9/herd" in line
        assert "s3cret-pw" not in result.stderr + result.stdout


def test_submit_with_the_broker_down_writes_nothing(make_herd, db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd(HERD_BROKER_URL="redis://:s3cret-pw@127.0.0.1:9/0")
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "What is the capital of France?"}\n')
    result = herd.cli("submit", str(tmp_path / "a.jsonl"), "--job", "j", "--task", "qa", check=False)
    assert result.returncode == 1, result.stderr
    line = _one_error_line(result.stderr)
    assert "cannot reach the broker at redis://:***@127.0.0.1:9/0" in line
    assert "s3cret-pw" not in result.stderr
    # Checked before anything is written: no job whose prompts would wait a stale period for messages.
    assert db.execute("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM prompts)").fetchone() == (
        0,
        0,
    )


def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(
    make_herd, db, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd()
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "What is the capital of France?"}\n')
    herd.cli("submit", str(tmp_path / "a.jsonl"), "--job", "j", "--task", "qa")
    missing = tmp_path / "no-such-folder" / "out.csv"
    written = tmp_path / "report.txt"
    for args in (
        ("export", "j", "-o", str(missing)),
        ("report", "j", "-o", str(missing)),
        # A good -o with a bad --plot: refused before the report is built, so -o is not written.
        ("report", "j", "-o", str(written), "--plot", str(missing)),
    ):
        result = herd.cli(*args, check=False)
        assert result.returncode == 2, result.stderr
        assert _one_error_line(result.stderr) == f"error: {missing}: folder {missing.parent} does not exist"
    assert not written.exists()


def test_status_says_why_prompts_failed(make_herd, db: psycopg.Connection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd()
    lines = "".join(f'{{"id": "d{i}", "text": "question {i}"}}\n' for i in range(6))
    (tmp_path / "a.jsonl").write_text(lines)
    herd.cli("submit", str(tmp_path / "a.jsonl"), "--job", "j", "--task", "qa")
    # As the pipeline records them (prompts.error): three time-outs, two rejections, one left alone.
    db.execute(
        """UPDATE prompts SET state = 'failed', error = CASE
               WHEN doc_key IN ('d0', 'd1', 'd2') THEN 'small answer: timed out calling http://x/v1'
               ELSE 'small answer: HTTP 400 from http://x/v1: context too long' END
           WHERE doc_key <> 'd5'"""
    )
    out = herd.cli("status", "j").stdout
    assert "why 5 failed:" in out
    assert "  3 x small answer: timed out calling http://x/v1 (e.g. d0)" in out
    assert "  2 x small answer: HTTP 400 from http://x/v1: context too long (e.g. d3)" in out


def test_an_empty_file_or_a_broken_pdf_is_one_line_naming_the_file(make_herd, db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd()
    (tmp_path / "empty.jsonl").write_text("")
    # A PDF header and nothing usable after it: pypdf logs its repairs ("EOF marker not found"), which
    # must not print above the error line.
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<>> endobj\n")
    result = herd.cli("submit", str(tmp_path / "empty.jsonl"), "--job", "j", "--task", "qa", check=False)
    assert result.returncode == 2
    assert (
        _one_error_line(result.stderr)
        == f"error: the document set is empty: no records in {tmp_path / 'empty.jsonl'}"
    )
    result = herd.cli("submit", str(tmp_path / "broken.pdf"), "--job", "j", "--task", "qa", check=False)
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(f"error: {tmp_path / 'broken.pdf'}: not a readable PDF")
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_a_template_field_no_record_has_names_both_sides(make_herd, db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd(
        """\
models:
  small:
    protocol: openai
    endpoints: http://127.0.0.1:9/v1
tasks:
  triage:
    kind: classify
    labels: [a, b]
    chat: "Classify {txt}"
"""
    )
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "hello", "lang": "en"}\n')
    result = herd.cli("submit", str(tmp_path / "a.jsonl"), "--job", "j", "--task", "triage", check=False)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == (
        f"error: {tmp_path / 'a.jsonl'}:1: task 'triage' needs field(s) ['txt']: its template in the herd "
        "file uses {txt}, and this record has: lang, text"
    )

"""current.sql is what the migrations produce, and its check fails when either side moves.

`python -m herd_migrations.sqldump --check` (run by .ci/run) is only worth having if it can fail: a
stale file (a view edited in a copy) and a changed database (a view, a function, a trigger altered
after migrating) must each produce a diff that names what changed. Only the first test depends on
the server's PostgreSQL version (it compares with the committed file); the others compare with what
the same server printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from herd.ledger.db import migrate
from herd_migrations.sqldump import CURRENT_SQL, dump, generate, main, scratch_database, stale_diff
from tests.support.harness import REPO, Services


def _pg_major(url: str) -> int:
    with psycopg.connect(url) as conn:
        (version,) = conn.execute("SHOW server_version_num").fetchone() or ("0",)
    return int(version) // 10000


def test_current_sql_is_what_the_migrations_produce(services: Services) -> None:
    printed_by = re.search(r"PostgreSQL (\d+) prints", CURRENT_SQL.read_text(encoding="utf-8"))
    assert printed_by, "current.sql's header names no PostgreSQL version"
    if _pg_major(services.database_url) != int(printed_by[1]):
        # Each major version prints definitions its own way; .ci/run's check uses the embedded one.
        pytest.skip(f"the test server is not PostgreSQL {printed_by[1]}, which printed current.sql")
    diff = stale_diff(CURRENT_SQL, generate(services.database_url))
    assert diff == "", f"current.sql is stale: run `python -m herd_migrations.sqldump`\n{diff}"


def test_check_passes_on_a_fresh_file_and_fails_with_a_diff_on_an_edited_copy(
    services: Services, tmp_path: Path
) -> None:
    fresh, stale = tmp_path / "fresh" / "current.sql", tmp_path / "stale.sql"
    fresh.parent.mkdir()
    assert main(["--output", str(fresh), "--server", services.database_url]) == 0
    assert [p.name for p in fresh.parent.iterdir()] == ["current.sql"]  # no .partial left behind
    text = fresh.read_text(encoding="utf-8")
    edited = "    count(*) AS attempts,\n    count(*) FILTER (WHERE p.parent_id IS NOT NULL) AS chunk"
    assert text.count(edited) == 1  # document_costs' select list
    stale.write_text(text.replace(edited, edited.replace("count(*) AS attempts", "0 AS attempts")))

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        command = ["-m", "herd_migrations.sqldump", "--check", "--output", str(path)]
        return subprocess.run(
            [sys.executable, *command, "--server", services.database_url],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=240,
        )

    failed = check(stale)
    assert failed.returncode == 1, failed.stderr
    assert "is stale: regenerate it with `python -m herd_migrations.sqldump`" in failed.stderr
    assert "-    0 AS attempts,\n+    count(*) AS attempts,\n" in failed.stdout
    assert "0 AS attempts" in stale.read_text()  # --check writes nothing
    passed = check(fresh)
    assert passed.returncode == 0 and passed.stdout == "", passed.stdout + passed.stderr


def test_the_dump_shows_a_changed_view_function_and_trigger(services: Services, tmp_path: Path) -> None:
    before = tmp_path / "current.sql"
    with scratch_database(services.database_url) as url:
        migrate(url)
        before.write_text(dump(url))
        assert stale_diff(before, dump(url)) == ""  # deterministic
        # What a new revision would do, with nobody regenerating the file afterwards.
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_get_viewdef('document_costs'::regclass)").fetchone()
            assert row is not None
            query = row[0].rstrip().rstrip(";")
            conn.execute(f"CREATE OR REPLACE VIEW document_costs AS SELECT d.*, 1 AS extra FROM ({query}) d")
            conn.execute("ALTER FUNCTION cost_job_window(bigint) SET jit = on")
            conn.execute("DROP TRIGGER cost_shares_truncate ON attempts")
        diff = stale_diff(before, dump(url))
    removed = {line[1:] for line in diff.splitlines() if line.startswith("-")}
    added = {line[1:] for line in diff.splitlines() if line.startswith("+")}
    assert "    1 AS extra" in added
    assert " SET jit TO 'off'" in removed and " SET jit TO 'on'" in added
    assert any(line.startswith("CREATE TRIGGER cost_shares_truncate AFTER TRUNCATE") for line in removed)
    # And the index says so: one trigger fewer than the file counted.
    triggers = int(before.read_text().split("-- Triggers (", 1)[1].split(")", 1)[0])
    assert any(line.startswith(f"-- Triggers ({triggers - 1}):") for line in added)


def test_a_database_that_was_never_migrated_is_refused(services: Services) -> None:
    with scratch_database(services.database_url) as url, pytest.raises(RuntimeError, match="never migrated"):
        dump(url)

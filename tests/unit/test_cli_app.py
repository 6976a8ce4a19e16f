"""herd/cli/app.py: the one place Herd's errors meet the user, and a `--help` that loads no database,
broker or numeric code. Every case runs the real `herd` in a child process, all but the one about
`herd keys` with no service to reach."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from herd.cli import main
from tests.support.harness import REPO

# What `herd --help` must not load: the database stack, the numeric one, the broker's, pydantic.
HEAVY = frozenset(
    "alembic sqlalchemy psycopg psycopg_binary numpy scipy sklearn celery kombu redis pydantic "
    "pydantic_settings".split()
)
# `herd --help`, each command's and each group's --help, and one command of a group.
HELP_ARGS = [["--help"], *([name, "--help"] for name in sorted(main.commands)), ["router", "train", "--help"]]

# The real command group, with three commands that raise what commands raise.
RAISING = """
import sys
from herd.cli import main
from herd.errors import ServiceError, UserError

@main.command("user")
def user() -> None:
    raise UserError("herd.yaml:3: models.small.endpoints: not a URL")

@main.command("service")
def service() -> None:
    raise ServiceError("http://127.0.0.1:9/v1: connection refused after 3 tries")

@main.command("bug")
def bug() -> None:
    raise RuntimeError("a bug")

main()
"""


def _herd(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env={**os.environ, "HERD_HOME": str(tmp_path / "home"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_user_error_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    done = _herd(["-c", RAISING, "user"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert _one_line(done.stderr) == "error: herd.yaml:3: models.small.endpoints: not a URL"


def test_a_service_error_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    done = _herd(["-c", RAISING, "service"], tmp_path)
    assert done.returncode == 1, done.stderr
    assert _one_line(done.stderr) == "error: http://127.0.0.1:9/v1: connection refused after 3 tries"


def test_anything_else_is_a_bug_with_its_traceback(tmp_path: Path) -> None:
    done = _herd(["-c", RAISING, "bug"], tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.rstrip().endswith("RuntimeError: a bug")


def test_a_bad_herd_file_names_its_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "herd.yaml"
    bad.write_text(
        "models:\n  small:\n    protocol: openai\n    endpoints: http://127.0.0.1:9/v1\n"
        "    max_in_flight: -1\ntasks:\n  qa:\n    kind: qa\n    chat: '{text}'\n"
    )
    done = _herd(["-m", "herd", "--herd-file", str(bad), "worker", "--model", "small"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert _one_line(done.stderr) == (
        f"error: {bad}:5: models.small.max_in_flight: Input should be greater than or equal to 1"
    )


def test_a_database_that_cannot_be_reached_is_a_service_error(tmp_path: Path) -> None:
    url = "postgresql://herd:s3cret-pw@127.0.0.1:9/herd"
    done = _herd(["-m", "herd", "status", "any"], tmp_path, HERD_DATABASE_URL=url)
    assert done.returncode == 1, done.stderr
    assert _one_line(done.stderr).startswith(
        "error: cannot reach the database at postgresql://herd:***@127.0.0.1:9/herd: "
    )
    assert "s3cret-pw" not in done.stderr


@pytest.mark.parametrize("args", HELP_ARGS, ids=" ".join)
def test_help_loads_no_database_broker_or_numeric_code(args: list[str], tmp_path: Path) -> None:
    # -X importtime lists every module the process imported, one a line on stderr.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "herd", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.startswith("Usage: "), done.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "herd.cli.app" in imported  # the listing is read right
    loaded = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert loaded == []


def test_an_error_a_command_used_to_catch_itself_reaches_the_one_place(make_herd) -> None:  # type: ignore[no-untyped-def]
    # `herd keys revoke` caught KeysError itself before the tree; now the group prints it.
    done = make_herd().cli("keys", "revoke", "nope", check=False)
    assert done.returncode == 2, done.stderr
    assert _one_line(done.stderr) == "error: no key with id or prefix 'nope' (`herd keys list` shows them)"


def test_a_bad_setting_is_a_user_error_naming_the_variable(tmp_path: Path) -> None:
    done = _herd(["-m", "herd", "status", "any"], tmp_path, HERD_DISPATCH_WINDOW="0")
    assert done.returncode == 2, done.stderr
    assert _one_line(done.stderr) == (
        "error: HERD_DISPATCH_WINDOW: Input should be greater than or equal to 1 (got '0')"
    )

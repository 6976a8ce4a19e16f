"""The package layout's promises: unique import roots in the wheel, and local processes that run
Herd's code whatever folder the user starts them from."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from herd.local.localherd import Daemon
from tests.support.harness import REPO


def test_the_wheel_installs_only_herd_import_roots(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("herd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    roots = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert roots == {"herd", "herd_workers", "herd_migrations"}
    # Package data travels with the code: the demo's data and herd file, the migration template.
    assert "herd/local/demo/herd.yaml" in names
    assert "herd_migrations/script.py.mako" in names
    assert any(n.startswith("herd_migrations/versions/0001_") for n in names)


SHADOW = 'raise SystemExit("a user package shadowed Herd")\n'


def test_local_daemons_run_herds_code_from_a_folder_with_packages_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "someone-elses-project"
    for name in ("herd", "services", "workers", "herd_workers"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(SHADOW)
        (project / name / "__main__.py").write_text(SHADOW)
    monkeypatch.chdir(project)
    # What `herd demo` does for every worker and model server it starts.
    daemon = Daemon(tmp_path / "home", "workers", "probe", marker="herd")
    daemon.start([sys.executable, "-m", "herd", "--help"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "Commands:" not in daemon.log.read_text(errors="replace"):
        time.sleep(0.1)
    log = daemon.log.read_text(errors="replace")
    assert "Herd: run a herd of open LLMs" in log, log
    assert "shadowed" not in log

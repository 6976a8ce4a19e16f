"""Running a benchmark: its `main` (SIGTERM unwinds like Ctrl-C, so every `finally` stops what it
started), its services and processes, its work folder."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from tests.support.harness import REPO, Services, services
from tests.support.processes import Procs


def run(main: Callable[[], int | None]) -> NoReturn:
    """Exit with `main()`'s status (None: 0); 130 when interrupted by Ctrl-C or SIGTERM."""

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        status = main()
    except KeyboardInterrupt:
        print("\ninterrupted; every process this benchmark started was stopped", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


@contextmanager
def stack(work: Path) -> Iterator[tuple[Services, Procs]]:
    """The services (tests/support/harness.py: from the environment, else embedded under work/home) and
    the processes a benchmark starts (in REPO), every one stopped before the services go away."""
    procs = Procs(cwd=REPO)
    with services(work / "home") as svc:
        try:
            yield svc, procs
        finally:
            procs.stop_all()


@contextmanager
def work_dir(prefix: str, *, keep: bool = False) -> Iterator[Path]:
    """A temporary folder for a run's files and logs, removed at the end unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"work dir kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)

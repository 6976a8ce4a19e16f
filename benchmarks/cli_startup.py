"""How long `herd --help` and `herd status --help` take as whole processes, beside an older Herd's.

    python -m benchmarks.cli_startup [--runs 11] [--baseline-ref REF | --baseline-src DIR]

Each command runs as its own process (the `herd` script of this virtualenv), alternating this
checkout and the baseline (A B A B ...), after one warm-up each; it prints each one's median wall
and CPU seconds (user + system, from the kernel's accounting of the finished child), and this
checkout's medians over the baseline's, with the machine's load. The baseline is the Herd of
another source tree, first on the child's PYTHONPATH (benchmarks/_lib/baseline.py): --baseline-src
DIR, or --baseline-ref REF exported with `git archive`; by default the commit before
services/herd/errors.py was added, the last Herd whose `--help` imported the database code.
No database, broker or model is started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._lib import baseline
from benchmarks._lib.entry import run
from benchmarks._lib.render import machine_state, table
from tests.support.harness import REPO

COMMANDS: tuple[tuple[str, ...], ...] = (("--help",), ("status", "--help"))
FIRST_LAZY_FILE = "services/herd/errors.py"


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system of the child


@dataclass(frozen=True)
class Figures:
    """The medians of one command's runs under one Herd."""

    wall_s: float
    cpu_s: float

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Figures:
        return cls(statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs))


@dataclass(frozen=True)
class Compared:
    command: str
    this: Figures
    base: Figures


def herd_command(args: Sequence[str]) -> list[str]:
    """`herd ARGS` as a user types it: this virtualenv's `herd` script, else `python -m herd`."""
    script = Path(sys.executable).with_name("herd")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "herd", *args]


def run_once(argv: Sequence[str], env: dict[str, str], cwd: Path) -> Run:
    """One whole process: wall seconds from start to reaped, and its CPU seconds (os.wait4). Not its
    peak memory: the kernel's figure for a child includes the parent's, which it was forked from."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace')}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


def measure(base_src: Path, runs: int, work: Path) -> list[Compared]:
    """Each of COMMANDS `runs` times under this checkout and under `base_src`, alternating."""
    this_env = baseline.env_for(os.environ, REPO)
    base_env = baseline.env_for(os.environ, base_src)
    out = []
    for args in COMMANDS:
        argv = herd_command(args)
        mine: list[Run] = []
        theirs: list[Run] = []
        for i in range(runs + 1):  # the first pair warms the file cache
            a, b = run_once(argv, this_env, work), run_once(argv, base_env, work)
            if i:
                mine.append(a)
                theirs.append(b)
        out.append(Compared("herd " + " ".join(args), Figures.of(mine), Figures.of(theirs)))
    return out


def default_ref() -> str | None:
    """The parent of the commit that added FIRST_LAZY_FILE (Herd before its CLI imported lazily);
    None in a history without it (a shallow clone)."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", FIRST_LAZY_FILE],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"{added[-1]}^" if added else None


def export(ref: str, into: Path) -> Path:
    """`git archive REF` of the three import roots into `into`; CalledProcessError for a bad REF."""
    archive = subprocess.run(
        ["git", "archive", ref, *baseline.ROOTS], cwd=REPO, capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def lines(compared: Sequence[Compared]) -> list[str]:
    rows = [
        [
            c.command,
            f"{c.this.wall_s:.3f}",
            f"{c.base.wall_s:.3f}",
            f"{c.this.wall_s / c.base.wall_s:.2f}",
            f"{c.this.cpu_s:.3f}",
            f"{c.base.cpu_s:.3f}",
            f"{c.this.cpu_s / c.base.cpu_s:.2f}",
        ]
        for c in compared
    ]
    headers = ["median of each", "wall s", "baseline", "ratio", "cpu s", "baseline", "ratio"]
    return [table(headers, rows)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cli_startup", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--runs", type=int, default=11, help="counted runs of each command under each Herd")
    baseline.add_argument(p)
    p.add_argument(
        "--baseline-ref",
        metavar="REF",
        help=f"a commit or branch to compare with (default: the parent of the one adding {FIRST_LAZY_FILE})",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.runs < 1:
        parser().error("--runs must be at least 1")
    if args.baseline_src is not None and args.baseline_ref is not None:
        parser().error("give --baseline-src or --baseline-ref, not both")
    work = Path(tempfile.mkdtemp(prefix="herd-cli-startup-"))
    try:
        if args.baseline_src is not None:
            src, name = args.baseline_src, str(args.baseline_src)
        else:
            name = args.baseline_ref or default_ref() or ""
            if not name:
                parser().error(f"no commit adds {FIRST_LAZY_FILE} in this history: give --baseline-ref REF")
            try:
                src = export(name, work / "baseline")
            except subprocess.CalledProcessError as exc:
                parser().error(f"--baseline-ref {name}: {exc.stderr.decode(errors='replace').strip()}")
        print(f"machine: {machine_state()}")
        print(f"baseline: {name}; {args.runs} runs each after a warm-up, alternating")
        compared = measure(src, args.runs, work)
        print("\n".join(lines(compared)))
        print(f"machine after: {machine_state()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run(main)

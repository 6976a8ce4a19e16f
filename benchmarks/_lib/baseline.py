"""`--baseline-src DIR`: run another checkout's Herd beside this one, in the same run of a benchmark.

DIR is a source tree of Herd (a `git worktree`, or `git archive <ref> | tar -x -C DIR`). Its
services/, workers/ and migrations/ go first on the PYTHONPATH of the processes started for the
baseline (`herd worker`, `herd submit`), ahead of this checkout's editable install, so they import that
version's `herd`. The services are migrated by this checkout: the baseline runs on today's schema.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from tests.support.harness import with_pythonpath

ROOTS = ("services", "workers", "migrations")


def checkout(value: str) -> Path:
    """argparse `type=` for --baseline-src: a directory holding Herd's source."""
    path = Path(value).expanduser().resolve()
    if not (path / "services" / "herd" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"{path} is not a Herd source tree (no services/herd/__init__.py); make one with "
            f"`git archive <ref> | tar -x -C {path}`"
        )
    return path


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline-src",
        type=checkout,
        default=None,
        metavar="DIR",
        help="another checkout of Herd (e.g. `git archive main | tar -x -C DIR`): its Herd runs too, "
        "beside this one, in the same run",
    )


def env_for(env: Mapping[str, str], src: Path) -> dict[str, str]:
    """`env` for a process that must import the Herd of `src` instead of this checkout's."""
    return with_pythonpath(env, [src / root for root in ROOTS])

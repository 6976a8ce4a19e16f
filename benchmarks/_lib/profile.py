"""Where a Herd worker's Python time goes: py-spy on the worker's GIL holder, by category.

`--gil` samples only the thread holding the GIL: on a small machine the worker process (one GIL) is
the bottleneck, so that is where its one core of Python goes.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import Procs

# The first category (in this order) whose marker is in a sample's stack.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("herd publish (refill messages)", ("publish (herd/queues.py",)),
    ("celery task events", ("celery/events/dispatcher.py",)),
    ("inference HTTP call + parsing", ("Backend.generate (herd/backends/",)),
    ("SQL (ledger, psycopg, pool)", ("herd/ledger/steps.py", "psycopg", "WorkerContext.connection")),
    ("pipeline, other Python", ("Pipeline.run (herd/cascade/pipeline.py",)),
    ("herd pump thread", ("Pump.",)),
    ("logging", ("logging/__init__.py",)),
    ("celery ack (acks_late bookkeeping)", ("Message.ack (kombu/", "QoS.ack (kombu/")),
    ("celery receive + unacked bookkeeping", ("Transport._deliver (kombu/", "Channel._brpop_read (kombu/")),
    ("celery task tracing", ("trace_task (celery/app/trace.py",)),
    ("celery event loop, other", ("asynloop (celery/worker/loops.py",)),
)


@dataclass(frozen=True)
class Profile:
    """py-spy's raw samples summarised: shares per category and of the hottest leaf frames."""

    path: Path
    samples: int
    categories: list[tuple[str, float]]  # (category, share of samples), largest first
    hottest: list[tuple[str, float]]  # (leaf frame, share)


def start_py_spy(procs: Procs, pid: int, out: Path, log: Path) -> subprocess.Popen[Any] | None:
    """py-spy recording `pid` into `out` (raw format) until stopped with SIGINT; None without py-spy."""
    exe = shutil.which("py-spy")
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--nonblocking", "--gil"]
    proc = procs.start([*cmd, "--output", str(out)], env=dict(os.environ), log=log)
    time.sleep(1.0)  # attach before the first message
    return proc


def summarize(path: Path, top: int = 12) -> Profile | None:
    """The collapsed stacks py-spy wrote to `path` by CATEGORIES, and the `top` hottest leaves;
    None when there is no file or no sample."""
    if not path.exists():
        return None
    categories: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaves[stack.rsplit(";", 1)[-1]] += n
        name = next((name for name, markers in CATEGORIES if any(m in stack for m in markers)), "other")
        categories[name] += n
    if not total:
        return None
    return Profile(
        path,
        total,
        [(name, n / total) for name, n in categories.most_common()],
        [(frame, n / total) for frame, n in leaves.most_common(top)],
    )

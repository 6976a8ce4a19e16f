"""`herd.jobs.submit.submit()` timed in a child process, as the CLI calls it (records from
`documents.read`), then the window's messages published; no worker runs.

The child (`python -m benchmarks._lib.submit RECORDS --job J --task T [--rss]`) prints one JSON line;
`submit_in_child` starts it and returns a `SubmitRun`. The child's process CPU (time.process_time)
and, with --rss, its resident memory sampled every 10 ms during submit() (psutil: ru_maxrss alone
survives fork+exec and import-time peaks, so it reports at least the parent's size) are measured too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import psycopg

from herd.herdfile.model import load_herd
from herd.jobs import documents
from herd.jobs.submit import submit
from herd.queues import publish
from herd.settings import get_settings
from herd.urls import database_url
from tests.support.harness import REPO


@dataclass(frozen=True)
class SubmitRun:
    read: int  # records read
    added: int  # prompts added
    dispatched: int  # messages published after submit()
    submit_s: float  # submit() wall clock
    publish_s: float
    cpu_s: float  # the child's CPU during submit() (time.process_time)
    rss_start_kb: int  # 0 unless sampled (--rss)
    rss_submit_max_kb: int
    rss_peak_kb: int  # ru_maxrss of the child
    child_wall_s: float = 0.0  # the child process, start to exit (set by the parent)

    @property
    def prompts_per_s(self) -> float:
        return self.read / self.submit_s


def submit_in_child(env: dict[str, str], records: Path, *, job: str, task: str, rss: bool) -> SubmitRun:
    """Run the child with `env` (harness.herd_env: the services, the herd file, HERD_DISPATCH_WINDOW)."""
    cmd = [sys.executable, "-m", "benchmarks._lib.submit", str(records), "--job", job, "--task", task]
    started = time.perf_counter()
    child = subprocess.run(
        [*cmd, *(["--rss"] if rss else [])], env=env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"submit of {records} failed ({child.returncode}):\n{child.stderr[-3000:]}")
    data = json.loads(child.stdout.strip().splitlines()[-1])
    return SubmitRun(**data, child_wall_s=wall)


def _child(path: str, job: str, task: str, sample_rss: bool) -> SubmitRun:
    settings = get_settings()
    herd = load_herd(settings.herd_file)
    files = documents.expand([path])
    me = psutil.Process()
    rss_start = me.memory_info().rss if sample_rss else 0
    sampled = [rss_start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            sampled.append(me.memory_info().rss)

    # Only when asked: the sampler's thread takes CPU (and the GIL) from submit().
    sampler = threading.Thread(target=sample, daemon=True) if sample_rss else None
    if sampler is not None:
        sampler.start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    with psycopg.connect(database_url(settings)) as conn:
        result = submit(
            conn, herd, job=job, task=task, records=documents.read(files), window=settings.dispatch_window
        )
    t1, cpu1 = time.perf_counter(), time.process_time()
    done.set()
    if sampler is not None:
        sampler.join()
    sent = publish(result.dispatched)
    return SubmitRun(
        read=result.read,
        added=result.added,
        dispatched=sent,
        submit_s=t1 - t0,
        publish_s=time.perf_counter() - t1,
        cpu_s=cpu1 - cpu0,
        rss_start_kb=rss_start // 1024,
        rss_submit_max_kb=max(sampled) // 1024,
        rss_peak_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="submit() timed in this process (run by a benchmark)")
    parser.add_argument("records", help="a JSONL file of records")
    parser.add_argument("--job", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--rss", action="store_true", help="sample the resident memory every 10 ms")
    args = parser.parse_args()
    run = _child(args.records, args.job, args.task, args.rss)
    fields = asdict(run)
    del fields["child_wall_s"]  # the parent's to measure
    print(json.dumps(fields))


if __name__ == "__main__":
    main()

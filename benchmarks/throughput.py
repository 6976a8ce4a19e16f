"""Throughput of Herd's pipeline against bare Celery on the same broker, and of `herd submit`.

    python -m benchmarks.throughput [--prompts N] [--submit-records M] [--concurrency C] [--bare-events]
        [--bare-herd-transport] [--repeat R] [--baseline-src DIR] [--profile DIR] [--skip bare|herd|submit]

Prints figures only (no asserts on speed); docs/scale.md has the latest and what they mean.

1. Services: HERD_DATABASE_URL / HERD_BROKER_URL when set, else an embedded Postgres / Redis under a
   temporary HERD_HOME, stopped at the end (tests/support/harness.py). The ledger is truncated and the
   Redis db flushed before each part: never point it at a database or Redis whose data you need.
2. Bare Celery (benchmarks/_lib/bare.py): a no-op task that does one Redis INCR (that is how the
   benchmark knows N tasks are done without a result backend), worker as a subprocess with Herd's
   worker flags (`--pool threads --concurrency C --prefetch-multiplier 1`, acks_late); N tasks sent in
   one producer loop; tasks/s from the first publish to the N-th INCR.
3. Herd (benchmarks/_lib/herd_run.py): the endpoint double out of process (instant confident answers),
   a one-model herd file (openai, chat, max_in_flight C, no escalation, task `qa`), one `herd worker`,
   `herd submit` of N prompts; attempts/s = N / (last attempts.finished_at - first
   attempts.started_at), plus wall clock from the start of `herd submit` to the last attempt. Task
   events off, Herd's default (HERD_TASK_EVENTS=0). With --bare-events, parts 2 and 3 run again with
   Herd's task events on both sides (`--task-events` and sent events; HERD_TASK_EVENTS=1). --repeat R
   alternates the runs R times. --baseline-src DIR adds, after each Herd run, the same run with another
   checkout's Herd (benchmarks/_lib/baseline.py).
4. Ratios: Herd against the bare run with the same event settings, from this run (medians over R):
   attempts/s over tasks/s, and worker CPU per attempt beside worker CPU per task.
5. Submit (benchmarks/_lib/submit.py): `herd.jobs.submit.submit()` in a child process (as the CLI
   calls it, records from `documents.read`) on 10k and M JSONL records (~200 characters of text each),
   window 1000, no worker; prompts/s and the child's peak RSS during submit() (psutil, sampled every
   10ms) for both sizes.
6. One summary line.

CPU seconds of every process involved (worker, endpoint double, Postgres and Redis when they run on
this machine, the submit CLI) are printed with each part: on a small machine the worker process (one
GIL) is the bottleneck. --profile DIR runs `py-spy record --gil` on the Herd worker during the first
Herd run and prints where its Python time goes, by category (SQL, HTTP, events, publish, Celery
receive/ack...). All subprocesses run in their own sessions and are stopped on exit, Ctrl-C included.

--bare-herd-transport adds, after each bare run, the same bare Celery on Herd's Redis transport
(herd/broker_transport.py), which also makes Celery's own receive and ack cheaper: against it, the
ratio is Herd's own work per attempt.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks._lib import baseline
from benchmarks._lib.bare import BareRun, run_bare
from benchmarks._lib.cpu import load_average
from benchmarks._lib.entry import run, stack, work_dir
from benchmarks._lib.herd_run import HerdRun, run_herd
from benchmarks._lib.render import cpu_line, rate
from benchmarks._lib.submit import SubmitRun, submit_in_child
from benchmarks._lib.workload import MODEL, TASK, write_records
from herd.settings import Settings
from tests.support.harness import Services, herd_env, herd_yaml, reset
from tests.support.processes import Procs

SUBMIT_WINDOW = 1000
# (Herd runs, bare runs, what): each ratio line compares runs from this same invocation.
RATIOS = (
    ("herd", "bare", "both without task events (Herd's default)"),
    ("herd+events", "bare+events", "both with Herd's task events (HERD_TASK_EVENTS=1)"),
    ("baseline", "bare", "baseline checkout, both without task events"),
    ("baseline+events", "bare+events", "baseline checkout, both with task events"),
    ("herd", "bare-ht", "bare on Herd's Redis transport too, both without task events"),
    ("herd+events", "bare-ht+events", "bare on Herd's Redis transport too, both with task events"),
)


@dataclass(frozen=True)
class SubmitSize:
    size: int
    run: SubmitRun
    queue_len: int  # messages in the model's queue after the publish


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def submit_sizes(services: Services, work: Path, sizes: list[int]) -> list[SubmitSize]:
    """submit() of each size of records in a child process, on an empty ledger each time."""
    herd_file = work / "herd-submit.yaml"
    herd_file.write_text(herd_yaml({MODEL: "http://127.0.0.1:9"}))  # submit never calls the endpoint
    env = herd_env(services, herd_file, HERD_DISPATCH_WINDOW=str(SUBMIT_WINDOW))
    out = []
    for size in sizes:
        path = work / f"records-{size}.jsonl"
        write_records(path, size)
        reset(services)
        result = submit_in_child(env, path, job=f"submit-{size}", task=TASK, rss=True)
        client = redis.Redis.from_url(services.broker_url)
        try:
            queued = int(client.llen(f"herd.{MODEL}"))
        finally:
            client.close()
        out.append(SubmitSize(size, result, queued))
    return out


# ----------------------------------------------------------------------------------------------- render


def bare_lines(r: BareRun) -> list[str]:
    return [
        f"  {r.tasks} tasks in {r.elapsed_s:.2f}s (publishing took {r.publish_s:.2f}s of it): "
        f"{r.tasks_per_s:.0f} tasks/s; worker CPU per task {r.worker_ms:.2f} ms",
        cpu_line(r.cpu),
    ]


def herd_lines(r: HerdRun, profiled: bool) -> list[str]:
    led = r.ledger
    mean, p50, p99 = led.latency_ms
    lines = [
        f"  {led.attempts} attempts ({led.errors} errors) in {led.span_s:.2f}s: {r.attempts_per_s:.0f} "
        f"attempts/s; worker CPU per attempt {r.worker_ms:.2f} ms",
        f"  prompt states {led.states}; endpoint calls {r.double_calls}",
        *([f"  first error: {led.first_error}"] if led.first_error else []),
        f"  wall clock from `herd submit` start to last attempt: {r.wall_s:.2f}s "
        f"({r.prompts / r.wall_s:.0f} prompts/s); submit CLI {r.submit_cli_s:.2f}s, "
        f"first attempt started {r.first_attempt_after_s:.2f}s after submit start",
        f"  endpoint latency seen by the worker: mean {mean:.1f}ms, p50 {p50:.1f}ms, p99 {p99:.1f}ms",
        cpu_line(r.cpu),
        f"  attempts finished per second since the first start: {led.timeline}",
    ]
    if profiled and r.profile is None:
        lines.append("  (no profile: py-spy missing or no samples)")
    elif r.profile is not None:
        lines.append(
            f"  py-spy (GIL holder only): {r.profile.samples} samples, raw stacks in {r.profile.path}"
        )
        lines += [f"    {share:6.1%}  {name}" for name, share in r.profile.categories]
        lines.append("  hottest leaf frames:")
        lines += [f"    {share:6.1%}  {frame}" for frame, share in r.profile.hottest]
    return lines


def ratio_lines(bare: dict[str, list[BareRun]], herd: dict[str, list[HerdRun]]) -> list[str]:
    """Herd against the bare run with the same task-event settings, from the same run of this
    benchmark: throughput ratio and worker CPU per message, medians over --repeat rounds."""
    lines = []
    for herd_key, bare_key, what in RATIOS:
        if not herd.get(herd_key) or not bare.get(bare_key):
            continue
        h_rate = median([r.attempts_per_s for r in herd[herd_key]])
        b_rate = median([r.tasks_per_s for r in bare[bare_key]])
        h_cpu = median([r.worker_ms for r in herd[herd_key]])
        b_cpu = median([r.worker_ms for r in bare[bare_key]])
        lines.append(
            f"Herd / bare Celery, {what}: {h_rate:.0f} attempts/s / {b_rate:.0f} tasks/s = "
            f"{h_rate / b_rate:.2f}x (goal >= 0.5x); worker CPU {h_cpu:.2f} ms per attempt vs "
            f"{b_cpu:.2f} ms per task"
        )
    return lines


def submit_lines(subs: list[SubmitSize]) -> list[str]:
    lines = []
    for s in subs:
        r = s.run
        lines.append(
            f"  {s.size:>7} records: submit() {r.submit_s:.2f}s = {r.prompts_per_s:.0f} prompts/s "
            f"(added {r.added}); publish {r.dispatched} msgs {r.publish_s:.2f}s (queue herd.{MODEL} holds "
            f"{s.queue_len}); child wall {r.child_wall_s:.2f}s"
        )
        # Not ru_maxrss alone: Linux keeps it across fork+exec, so the child reports at least our size.
        lines.append(
            f"          RSS sampled every 10ms: {r.rss_start_kb / 1024:.0f} MB before submit(), max "
            f"{r.rss_submit_max_kb / 1024:.0f} MB during (ru_maxrss {r.rss_peak_kb / 1024:.0f} MB)"
        )
    return lines


def summary(bare: dict[str, list[BareRun]], herd: dict[str, list[HerdRun]], subs: list[SubmitSize]) -> str:
    parts = []
    for key in ("bare", "bare+events"):
        if bare.get(key):
            parts.append(f"{key}: {median([r.tasks_per_s for r in bare[key]]):.0f} tasks/s")
    for key in ("herd", "herd+events"):
        if herd.get(key):
            parts.append(f"{key}: {median([r.attempts_per_s for r in herd[key]]):.0f} attempts/s")
    if herd.get("herd"):
        parts.append(f"herd wall {median([r.prompts / r.wall_s for r in herd['herd']]):.0f} prompts/s")
    if subs:
        big = subs[-1]
        parts.append(f"submit {big.size // 1000}k: {rate(big.run.prompts_per_s)} prompts/s")
        if len(subs) > 1:
            sizes = "/".join(f"{s.size // 1000}k" for s in subs)
            rss = "/".join(f"{s.run.rss_submit_max_kb / 1024:.0f}" for s in subs)
            parts.append(f"RSS {sizes}: {rss} MB")
    return " | ".join(parts)


# ------------------------------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Pair:
    """What one round at one event setting runs with."""

    services: Services
    procs: Procs
    work: Path
    args: argparse.Namespace
    window: int
    events: bool
    tag: str  # " [round i/R]"
    profile: Path | None  # py-spy the Herd worker into this folder


def run_pair(
    p: Pair, bare: dict[str, list[BareRun]], herd: dict[str, list[HerdRun]], say: Callable[..., None]
) -> None:
    """One bare Celery run and one Herd run with the same task-event settings (each with its
    variants: Herd's transport under bare Celery, the baseline checkout's Herd), appended to the runs."""
    args, n, c, tag = p.args, p.args.prompts, p.args.concurrency, p.tag
    suffix = "+events" if p.events else ""
    if "bare" not in args.skip:
        setting = (
            "with Herd's task events (--task-events, sent events)" if p.events else "without task events"
        )
        say(
            f"\n== bare Celery {setting}: no-op task (one Redis INCR), threads pool, prefetch 1, "
            f"acks_late =={tag}"
        )
        r = run_bare(p.services, p.procs, p.work, n, c, loglevel=args.loglevel, events=p.events)
        bare["bare" + suffix].append(r)
        say(*bare_lines(r))
        if args.bare_herd_transport:
            say(f"\n== the same bare Celery on Herd's Redis transport (herd/broker_transport.py) =={tag}")
            r = run_bare(
                p.services,
                p.procs,
                p.work,
                n,
                c,
                loglevel=args.loglevel,
                events=p.events,
                herd_transport=True,
            )
            bare["bare-ht" + suffix].append(r)
            say(*bare_lines(r))
    if "herd" not in args.skip:
        with_events = " with HERD_TASK_EVENTS=1" if p.events else ""
        say(
            f"\n== Herd{with_events}: 1 model ({MODEL}: openai chat on the endpoint double, "
            f"max_in_flight {c}, no escalation), 1 worker, window {p.window} =={tag}"
        )
        common = {"window": p.window, "loglevel": args.loglevel, "events": p.events}
        h = run_herd(p.services, p.procs, p.work, n, c, profile_dir=p.profile, **common)
        herd["herd" + suffix].append(h)
        say(*herd_lines(h, profiled=p.profile is not None))
        if args.baseline_src is not None:
            say(f"\n== Herd from {args.baseline_src}{with_events}, otherwise the same =={tag}")
            h = run_herd(p.services, p.procs, p.work, n, c, src=args.baseline_src, **common)
            herd["baseline" + suffix].append(h)
            say(*herd_lines(h, profiled=False))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--prompts", type=int, default=3000, help="N: bare tasks and Herd prompts")
    p.add_argument("--submit-records", type=int, default=100_000, help="records to submit")
    p.add_argument("--concurrency", type=int, default=8, help="worker threads = max_in_flight")
    p.add_argument("--window", type=int, default=None, help="HERD_DISPATCH_WINDOW (default: Herd's)")
    p.add_argument("--loglevel", default="info", help="both workers' log level (herd's default: info)")
    p.add_argument(
        "--bare-events", action="store_true", help="also bare Celery and Herd, both with Herd's task events"
    )
    p.add_argument(
        "--bare-herd-transport",
        action="store_true",
        help="also bare Celery on Herd's Redis transport, to compare Herd's own work per attempt",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="rounds of the bare and Herd parts, alternating; medians"
    )
    baseline.add_argument(p)
    p.add_argument("--profile", type=Path, default=None, help="py-spy record the Herd worker into DIR")
    p.add_argument("--skip", action="append", default=[], choices=["bare", "herd", "submit"])
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, files)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    window = args.window or Settings().dispatch_window
    n, c = args.prompts, args.concurrency
    small = 10_000 if args.submit_records > 10_000 else max(1, args.submit_records // 10)
    if args.profile and shutil.which("py-spy") is None:
        print("warning: --profile needs py-spy (pip install py-spy); not profiling", file=sys.stderr)
    bare: dict[str, list[BareRun]] = collections.defaultdict(list)
    herd: dict[str, list[HerdRun]] = collections.defaultdict(list)
    subs: list[SubmitSize] = []

    def say(*lines: str) -> None:
        print("\n".join(lines), flush=True)

    with work_dir("herd-bench-", keep=args.keep) as work, stack(work) as (svc, procs):
        if svc.embedded:
            say(f"embedded services started under {svc.home} in {svc.started_s:.1f}s")
        where = "embedded" if svc.embedded else "from HERD_DATABASE_URL / HERD_BROKER_URL"
        say(f"postgres + redis {where}; work dir {work}")
        say(
            f"N={n} concurrency={c} loglevel={args.loglevel} python={sys.version.split()[0]} "
            f"cores={os.cpu_count()} load average before start={load_average():.2f}"
        )
        for round_ in range(1, args.repeat + 1):
            tag = f" [round {round_}/{args.repeat}]" if args.repeat > 1 else ""
            for events in [False, True] if args.bare_events else [False]:
                profile = args.profile if (round_ == 1 and not events) else None
                run_pair(Pair(svc, procs, work, args, window, events, tag, profile), bare, herd, say)
        if ratios := ratio_lines(bare, herd):
            say(f"\n== ratios, same run (load average now {load_average():.2f}) ==")
            say(*["  " + line for line in ratios])
        if "submit" not in args.skip:
            what = f"herd.jobs.submit.submit() in a child process, window {SUBMIT_WINDOW}, no worker"
            say(f"\n== submit: {what} ==")
            subs = submit_sizes(svc, work, sorted({small, args.submit_records}))
            say(*submit_lines(subs))
    print("\n" + summary(bare, herd, subs))
    return 0


if __name__ == "__main__":
    run(main)

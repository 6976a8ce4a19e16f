"""`herd submit` throughput with an active TF-IDF router against without one, in the same run.

    python -m benchmarks.submit_router [--records M] [--repeat R]

Prints figures only (no asserts on speed); docs/policy.md has the latest. Goal: >= 10,000 prompts/s
with the router on this machine (2 cores), on >= 50,000 records.

Services from HERD_DATABASE_URL / HERD_BROKER_URL when set, else embedded under a temporary HERD_HOME
(tests/support/harness.py; the ledger is truncated and the Redis db flushed before each run: never point
it at data you need); `herd.jobs.submit.submit()` runs in a child process as the CLI calls it
(benchmarks/_lib/submit.py: records from `documents.read`), window 1000, no worker; prompts/s =
records / submit() seconds, and the messages published after it.

- Herd file: three models small -> medium -> large (no endpoint is called), task `qa`.
- Router: TF-IDF word 1-2-grams over 3 models, trained on 3,000 scripted topic prompts
  (herd.policy.router.synthetic), recorded as the task's active version before each routed run.
- Records: M JSONL lines, a topic sentence padded to ~200 characters (as throughput's records).
- Runs alternate without / with the router, --repeat times each; best and median of each are printed,
  with the share of prompts routed to each model and the routed run's router columns checked, and the
  submit process's CPU seconds (time.process_time), which a busy machine does not inflate as much as
  wall time.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks._lib.entry import run, stack, work_dir
from benchmarks._lib.submit import SubmitRun, submit_in_child
from benchmarks._lib.workload import TASK, write_records
from herd.policy.router import train_router
from herd.policy.router import versions as routers
from herd.policy.router.synthetic import topic_data, topic_texts
from tests.support.harness import TIERS, Services, herd_env, herd_yaml, reset

WINDOW = 1000


@dataclass(frozen=True)
class RoutedRun:
    routed: bool
    submit: SubmitRun
    entry_models: dict[str, int]  # prompts per entry model
    with_router_columns: int  # prompts with both router columns set

    @property
    def cpu_ms_per_1k(self) -> float:
        return self.submit.cpu_s * 1e6 / self.submit.read


def record_router(svc: Services) -> None:
    """A TF-IDF router over the three models, recorded as the task's active version."""
    texts, data = topic_data(3000, seed=1, task=TASK)
    router = train_router(texts, data, models=list(TIERS))
    with psycopg.connect(svc.database_url) as conn:
        routers.record(conn, router, None, {}, activate=True)


def run_once(svc: Services, herd_file: Path, records: Path, *, routed: bool, job: str) -> RoutedRun:
    reset(svc)  # TRUNCATE jobs CASCADE empties routers too: record the router after it
    if routed:
        record_router(svc)
    env = herd_env(svc, herd_file, HERD_DISPATCH_WINDOW=str(WINDOW))
    result = submit_in_child(env, records, job=job, task=TASK, rss=False)
    with psycopg.connect(svc.database_url) as conn:
        rows = conn.execute(
            "SELECT model, count(*), count(router_version), count(router_p_good) FROM prompts GROUP BY model"
        ).fetchall()
    models = {str(m): int(c) for m, c, _, _ in rows}
    return RoutedRun(routed, result, models, sum(int(v) for _, _, v, p in rows if v == p))


def run_line(r: RoutedRun, i: int) -> str:
    s = r.submit
    label = "with router   " if r.routed else "without router"
    cpu = f"submit process CPU {s.cpu_s:.2f}s = {s.read / s.cpu_s:.0f} prompts per CPU second"
    return (
        f"  {label} run {i + 1}: {s.read} records, submit() {s.submit_s:.2f}s = {s.prompts_per_s:.0f} "
        f"prompts/s ({cpu}); publish {s.dispatched} msgs {s.publish_s:.2f}s; entry models {r.entry_models}; "
        f"rows with router columns {r.with_router_columns if r.routed else 0}"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.submit_router", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=2, help="runs of each variant, alternating")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    runs: dict[bool, list[RoutedRun]] = {False: [], True: []}
    with work_dir("herd-bench-router-") as work:
        herd_file = work / "herd.yaml"
        herd_file.write_text(herd_yaml(dict.fromkeys(TIERS, "http://127.0.0.1:9")))  # never called
        records = work / "records.jsonl"
        write_records(records, args.records, topic_texts(args.records, seed=5)[0])
        with stack(work) as (svc, _procs):
            for i in range(args.repeat):
                for routed in (False, True):
                    r = run_once(svc, herd_file, records, routed=routed, job=f"bench-{i}-{int(routed)}")
                    runs[routed].append(r)
                    print(run_line(r, i), flush=True)
    best = {k: max(r.submit.prompts_per_s for r in v) for k, v in runs.items()}
    median = {k: statistics.median(r.submit.prompts_per_s for r in v) for k, v in runs.items()}
    cpu_ms = {k: min(r.cpu_ms_per_1k for r in v) for k, v in runs.items()}
    print(
        f"submit process CPU per 1k prompts: without router {cpu_ms[False]:.1f} ms, with router "
        f"{cpu_ms[True]:.1f} ms (client work only; wall-clock rates also depend on Postgres and the load)"
    )
    print(
        f"submit {args.records} records: without router {best[False]:.0f} prompts/s (median "
        f"{median[False]:.0f}), with TF-IDF router {best[True]:.0f} prompts/s (median {median[True]:.0f}); "
        f"router costs {1 - best[True] / best[False]:.0%} (goal: >= 10000 prompts/s with it)"
    )
    return 0


if __name__ == "__main__":
    run(main)

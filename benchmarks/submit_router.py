"""`herd submit` throughput with an active TF-IDF router against without one, in the same run.

    python benchmarks/submit_router.py [--records M] [--repeat R]

Prints figures only (no asserts on speed). Goal (issue 10): >= 10,000 prompts/s with the router on this
machine (2 cores), on >= 50,000 records.

Approach of benchmarks/throughput.py part 4 (its helpers are reused): services from HERD_DATABASE_URL /
HERD_BROKER_URL when set, else embedded under a temporary HERD_HOME (tables truncated, Redis db flushed
before each run: never point it at data you need); `herd.jobs.submit.submit()` runs in a child process
as the CLI calls it (records from `documents.read`), window 1000, no worker; prompts/s = records /
submit() seconds, and the messages published after it.

- Herd file: three models small -> medium -> large (no endpoint is called), task `qa`.
- Router: TF-IDF word 1-2-grams over 3 models, trained on 3,000 scripted topic prompts
  (herd.policy.router.synthetic), recorded as the task's active version before each routed run.
- Records: M JSONL lines, a topic sentence padded to ~200 characters (as throughput.py's records).
- Runs alternate without / with the router, --repeat times each; best and median of each are printed,
  with the share of prompts routed to each model and the routed run's router columns checked, and the
  submit process's CPU seconds (time.process_time), which a busy machine does not inflate as much as
  wall time.

Measured 2026-11-30 on the idle 2-core machine (load average 0.4), local Postgres and Redis,
`--records 50000 --repeat 2`: without router 32,337 prompts/s (median 29,136), with the TF-IDF router
20,171 (median 18,422); submit CPU per 1k prompts 15.0 ms without, 32.6 ms with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/submit_router.py`: sys.path[0] is benchmarks/
    sys.path.insert(0, str(REPO))

from benchmarks.throughput import FILLER, Services, fresh_state, herd_env, services  # noqa: E402

TASK = "qa"
MODELS = ("small", "medium", "large")
WINDOW = 1000


def herd_yaml() -> str:
    nxt = {"small": "medium", "medium": "large"}
    lines = ["models:"]
    for m in MODELS:
        lines += [f"  {m}:", "    protocol: openai", "    endpoints: http://127.0.0.1:9/v1",
                  "    gpus: {type: L4, count: 1, usd_per_hour: 0.8}"]  # fmt: skip
        if m in nxt:
            lines.append(f"    escalation: {{next: {nxt[m]}, measure: first_token_margin, threshold: 0.5}}")
    return "\n".join([*lines, "tasks:", f"  {TASK}:", "    kind: qa", ""])


def write_records(path: Path, n: int) -> None:
    from herd.policy.router.synthetic import topic_texts

    texts, _ = topic_texts(n, seed=5)
    with path.open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            head = f"Document {i}. {text} "
            out.write(json.dumps({"id": i, "text": head + FILLER[: max(0, 200 - len(head))]}) + "\n")


def record_router(svc: Services) -> None:
    import psycopg

    from herd.ledger import routers
    from herd.policy.router import train_router
    from herd.policy.router.synthetic import topic_data

    texts, data = topic_data(3000, seed=1, task=TASK)
    router = train_router(texts, data, models=list(MODELS))
    with psycopg.connect(svc.database_url) as conn:
        routers.record(conn, router, None, {}, activate=True)


def submit_child(path: str, job: str) -> None:
    """Runs in its own process: submit() as the CLI calls it, then publish; timings as JSON."""
    import psycopg

    from herd.herdfile.model import load_herd
    from herd.jobs import documents
    from herd.jobs.submit import submit
    from herd.queues import publish
    from herd.settings import get_settings
    from herd.urls import database_url

    settings = get_settings()
    herd = load_herd(settings.herd_file)
    files = documents.expand([path])
    t0, cpu0 = time.perf_counter(), time.process_time()
    with psycopg.connect(database_url(settings)) as conn:
        result = submit(
            conn, herd, job=job, task=TASK, records=documents.read(files), window=settings.dispatch_window
        )
    t1, cpu1 = time.perf_counter(), time.process_time()
    sent = publish(result.dispatched)
    print(json.dumps({"read": result.read, "submit_s": t1 - t0, "publish_s": time.perf_counter() - t1,
                      "dispatched": sent, "cpu_s": cpu1 - cpu0}))  # fmt: skip


def run_once(svc: Services, work: Path, records: Path, routed: bool, job: str) -> dict[str, Any]:
    import psycopg

    fresh_state(svc)  # TRUNCATE jobs CASCADE empties routers too: record the router after it
    if routed:
        record_router(svc)
    env = herd_env(svc, work / "herd.yaml", HERD_DISPATCH_WINDOW=str(WINDOW))
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--submit-child", str(records), "--job", job],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"submit failed:\n{child.stderr[-3000:]}")
    data = json.loads(child.stdout.strip().splitlines()[-1])
    data["prompts_per_s"] = data["read"] / data["submit_s"]
    with psycopg.connect(svc.database_url) as conn:
        rows = conn.execute(
            "SELECT model, count(*), count(router_version), count(router_p_good) FROM prompts GROUP BY model"
        ).fetchall()
    data["models"] = {str(m): int(c) for m, c, _, _ in rows}
    data["with_router_columns"] = sum(int(v) for _, _, v, p in rows if v == p)
    return data


def run_line(r: dict[str, Any], i: int, routed: bool) -> str:
    label = "with router   " if routed else "without router"
    cpu = f"submit process CPU {r['cpu_s']:.2f}s = {r['read'] / r['cpu_s']:.0f} prompts per CPU second"
    return (
        f"  {label} run {i + 1}: {r['read']} records, submit() {r['submit_s']:.2f}s = "
        f"{r['prompts_per_s']:.0f} prompts/s ({cpu}); publish {r['dispatched']} msgs {r['publish_s']:.2f}s; "
        f"entry models {r['models']}; rows with router columns {r['with_router_columns'] if routed else 0}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--submit-child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.submit_child:
        submit_child(args.submit_child, args.job)
        return 0
    with tempfile.TemporaryDirectory(prefix="herd-bench-router-") as tmp:
        work = Path(tmp)
        (work / "herd.yaml").write_text(herd_yaml())
        records = work / "records.jsonl"
        write_records(records, args.records)
        with services(work / "home") as svc:
            runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for i in range(args.repeat):
                for routed in (False, True):
                    r = run_once(svc, work, records, routed, f"bench-{i}-{int(routed)}")
                    runs[routed].append(r)
                    print(run_line(r, i, routed))
    best = {k: max(r["prompts_per_s"] for r in v) for k, v in runs.items()}
    median = {k: statistics.median(r["prompts_per_s"] for r in v) for k, v in runs.items()}
    cpu_ms = {k: min(r["cpu_s"] for r in v) * 1e6 / args.records for k, v in runs.items()}
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
    raise SystemExit(main())

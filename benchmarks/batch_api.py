"""The OpenAI Batch API end to end: a batch of N chat requests from upload to downloaded output through
`herd serve`, beside `herd submit` of the same requests in the same run, and the server's peak memory.

    python -m benchmarks.batch_api [--sizes 10000,100000] [--paths api,cli-batch,cli-documents]

Services: HERD_DATABASE_URL / HERD_BROKER_URL when set, else an embedded Postgres / Redis under a temporary
HERD_HOME (tests/support/harness.py). The ledger (the API's tables too) is truncated and the Redis db
flushed before each run: never point it at data you need. docs/batch-api.md has the latest figures.

One model (`small`, OpenAI chat on an out-of-process endpoint double answering at once and confidently),
one `herd worker` (max_in_flight 8). Per size N, each path on a fresh ledger:
- api: a fresh `herd serve`; the OpenAI SDK uploads the N-line file, creates the batch, polls every 0.5 s
  until it is completed, and streams the output file to disk. Wall time from the upload's first byte to
  the output's last; the server's peak resident memory (VmHWM, the kernel's own high-water mark) over its
  whole life, so it covers upload, validation, the run, finalization and download.
- cli-batch: `herd submit requests.jsonl` (the same batch file), wait for the last answer, `herd export
  --format openai-batch -o`.
- cli-documents: the same N prompts as Herd documents (`{"id", "text"}` JSONL under a one-message chat
  template), `herd submit`, wait, `herd export`: the baseline, Herd before its Batch API.
Rates are requests per second of wall time. Memory is flat when the server's peak at 100k is within a few
MiB of its peak at 10k: the upload is spooled to disk, validation and the files stream in chunks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks._lib.cpu import peak_mib
from benchmarks._lib.entry import run, stack, work_dir
from benchmarks._lib.render import machine_state, table
from tests.support.api import ApiServer, create_key, wait_batch
from tests.support.harness import Services, herd_env, reset, start_double, start_worker
from tests.support.processes import Procs

CONTENT = "What is the capital of country number {i}? Answer with one word."

HERD = """\
models:
  small:
    protocol: openai
    endpoints: {url}/m/small/v1
    max_in_flight: 8
    gpus: {{type: L4, count: 1, usd_per_hour: 0.8}}
tasks:
  chat:
    kind: chat
  documents:
    kind: template
    chat: "{{text}}"
routes:
  herd: chat
"""


@dataclass(frozen=True)
class Run:
    path: str
    size: int
    wall_s: float
    server_peak_mib: float | None = None

    @property
    def rate(self) -> float:
        return self.size / self.wall_s


def write_inputs(work: Path, n: int) -> tuple[Path, Path]:
    """The same N prompts as an OpenAI batch file and as Herd documents."""
    batch, docs = work / f"requests-{n}.jsonl", work / f"documents-{n}.jsonl"
    with batch.open("w") as b, docs.open("w") as d:
        for i in range(n):
            text = CONTENT.format(i=i)
            body = {"model": "herd", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
            b.write(
                json.dumps(
                    {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                )
                + "\n"
            )
            d.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")
    return batch, docs


def start_small(procs: Procs, env: dict[str, str], work: Path) -> None:
    start_worker(procs, env, "small", work / "worker.log", timeout=120)


def wait_job(url: str, job: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                """SELECT count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id
                   WHERE j.name = %s AND p.state IN ('done', 'failed')""",
                (job,),
            ).fetchone()
            if row is not None and row[0] >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job}: {row} of {n} finished after {timeout:.0f}s")
            time.sleep(0.5)


def herd_cli(env: dict[str, str], work: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "herd", *args], env=env, cwd=work, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"herd {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def run_api(procs: Procs, env: dict[str, str], work: Path, batch: Path, n: int) -> Run:
    try:
        start_small(procs, env, work)
        server = ApiServer(procs, {**env, "HERD_API_POLL_S": "0.5"}, work / "serve.log").start()
        assert server.proc is not None
        client = server.client(create_key(env, work, "bench"))
        started = time.perf_counter()
        with batch.open("rb") as handle:
            upload = client.files.create(file=handle, purpose="batch")
        created = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_batch(client, created.id, timeout=max(600.0, n / 20))
        if done.status != "completed" or done.output_file_id is None:
            raise RuntimeError(f"batch ended {done.status}: {done}")
        out = work / f"output-{n}.jsonl"
        with (
            client.files.with_streaming_response.content(done.output_file_id) as response,
            out.open("wb") as f,
        ):
            for chunk in response.iter_bytes(1024 * 1024):
                f.write(chunk)
        wall = time.perf_counter() - started
        peak = peak_mib(server.proc.pid)
    finally:
        procs.stop_all()
    lines = sum(1 for _ in out.open("rb"))
    if lines != n:
        raise RuntimeError(f"the output file has {lines} lines, not {n}")
    return Run("api", n, wall, peak)


def run_cli(
    procs: Procs, env: dict[str, str], work: Path, path: Path, n: int, *, batch: bool, url: str
) -> Run:
    job = f"{'batch' if batch else 'docs'}-{n}"
    try:
        start_small(procs, env, work)
        started = time.perf_counter()
        herd_cli(env, work, "submit", str(path), "--job", job, *(() if batch else ("--task", "documents")))
        wait_job(url, job, n, timeout=max(600.0, n / 20))
        out = work / f"{job}.jsonl"
        fmt = ("--format", "openai-batch") if batch else ()
        herd_cli(env, work, "export", job, *fmt, "-o", str(out))
        wall = time.perf_counter() - started
    finally:
        procs.stop_all()
    return Run("cli-batch" if batch else "cli-documents", n, wall)


def one_run(
    path: str, svc: Services, procs: Procs, env: dict[str, str], work: Path, n: int, batch: Path, docs: Path
) -> Run:
    if path == "api":
        return run_api(procs, env, work, batch, n)
    if path == "cli-batch":
        return run_cli(procs, env, work, batch, n, batch=True, url=svc.database_url)
    return run_cli(procs, env, work, docs, n, batch=False, url=svc.database_url)


PATHS = ("api", "cli-batch", "cli-documents")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch_api", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="batch sizes, comma-separated")
    p.add_argument("--paths", default=",".join(PATHS), help="which paths to run, comma-separated")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    paths = args.paths.split(",")
    unknown = set(paths) - set(PATHS)
    if unknown:
        parser().error(f"unknown paths {sorted(unknown)} (known: {', '.join(PATHS)})")
    print(machine_state(), flush=True)
    runs: list[Run] = []
    with work_dir("herd-bench-batch-") as work, stack(work) as (svc, procs):
        double = start_double(procs)
        double.script({"rules": [], "default": {"text": "ok", "first": [0.99, 0.005]}})
        herd_file = work / "herd.yaml"
        herd_file.write_text(HERD.format(url=double.url))
        env = herd_env(svc, herd_file, HERD_PUMP_INTERVAL_S="1")
        for n in sizes:
            batch, docs = write_inputs(work, n)
            for path in paths:
                reset(svc)
                # The double stays up; each run's own processes stop with it.
                result = one_run(path, svc, Procs(cwd=work), env, work, n, batch, docs)
                runs.append(result)
                peak = f", server peak {result.server_peak_mib:.0f} MiB" if result.server_peak_mib else ""
                print(
                    f"{path:>13} {n:>7,} requests: {result.wall_s:7.1f} s, {result.rate:6.0f}/s{peak}",
                    flush=True,
                )
    print(summary(runs, sizes))
    print(machine_state())
    return 0


def summary(runs: list[Run], sizes: list[int]) -> str:
    rows = [
        [
            r.path,
            f"{r.size:,}",
            f"{r.wall_s:.1f}",
            f"{r.rate:.0f}",
            f"{r.server_peak_mib:.0f}" if r.server_peak_mib is not None else "-",
        ]
        for r in runs
    ]
    lines = ["", table(["path", "requests", "wall s", "requests/s", "server peak MiB"], rows)]
    by = {(r.path, r.size): r for r in runs}
    for n in sizes:
        api, docs = by.get(("api", n)), by.get(("cli-documents", n))
        if api and docs:
            lines.append(
                f"{n:,}: the API's rate is {api.rate / docs.rate:.2f}x herd submit's of the same prompts"
            )
    if len(sizes) > 1 and all(("api", n) in by for n in sizes):
        low, high = by[("api", min(sizes))], by[("api", max(sizes))]
        lines.append(
            f"server peak memory {low.server_peak_mib:.0f} MiB at {low.size:,}, "
            f"{high.server_peak_mib:.0f} MiB at {high.size:,} ({high.size // low.size}x the requests)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)

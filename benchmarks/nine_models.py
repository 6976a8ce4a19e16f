"""Herd's policy commands on a 9-model herd with a 1,500-prompt calibration job and a 1,500-prompt live
job: wall seconds and peak memory of each as a whole process, beside the same commands on the same
ledger with the cost view of before (0009's `attempt_costs`), on a 3-model herd too, and with
--baseline-src another checkout's Herd, in the same run.

    python -m benchmarks.nine_models [--prompts 1500] [--models 3,9] [--analyze] [--baseline-src DIR]

Prints figures only (no asserts on speed); docs/benchmarks.md has the latest. Goal: each command in
seconds, not minutes, in well under 1 GB.

1. Services: tests/support/harness.py (HERD_DATABASE_URL / HERD_BROKER_URL, else embedded ones).
2. Per herd size: the ledger is emptied, then a calibration job (every model answers every prompt)
   and a live job (the herd file's cascade from the cheapest model) are written straight into it with
   COPY (benchmarks/_lib/many_models.py: seeded, synthetic but shaped like real attempts: measures,
   GPU prices and busy seconds, answers scored against references). No worker, no endpoint.
   The planner's statistics are those of a job that has just landed: on the embedded Postgres,
   autovacuum is off for the ledger's tables during the run (a job in a large ledger stays below
   autovacuum's 10% threshold just the same); --analyze runs ANALYZE after loading instead.
3. Two cost views on the same rows: 0009's `attempt_costs` (the baseline, put back for its rows,
   then today's restored) and today's. Under each, `herd router train` (setup for router eval; its
   figures are printed too), then each command once, as the user types it, in a fresh process:
   wall seconds until reaped and the child's peak resident memory (ru_maxrss from wait4). The parent
   stays small (the rows are on the server), so a child's figure is its own.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks._lib import baseline, many_models
from benchmarks._lib.cost_views import attempt_costs_view
from benchmarks._lib.cpu import peak_mib
from benchmarks._lib.entry import run, stack, work_dir
from benchmarks._lib.render import machine_state, table
from tests.support.harness import REPO, Services, herd_env, reset

GOAL_S = 60.0  # "seconds, not minutes"
GOAL_MB = 1024.0
# The children's libpq application_name: a killed command's query runs on in its server backend
# (holding its locks, taking CPU from the next command) until terminated by this name.
APP_NAME = "herd-bench-nine-models"
LEDGER = ("jobs", "prompts", "attempts", "scores", "finals")


@dataclass(frozen=True)
class Timed:
    label: str
    wall_s: float | None  # None: killed at the timeout
    peak_mb: float
    status: int


def commands(herd: many_models.Herd) -> list[tuple[str, list[str]]]:
    """(label, herd ARGS) of the timed commands; `calibrate` matches the best model at 98%."""
    best = herd.names[-1]
    return [
        ("replay --sweep", ["replay", "cal", "--task", "qa", "--sweep", "--scorer-cut", "0.5"]),
        ("replay --policy (herd file)", ["replay", "cal", "--task", "qa", "--scorer-cut", "0.5"]),
        (
            f"calibrate --match {best} --at 0.98",
            ["calibrate", "cal", "--task", "qa", "--match", best, "--at", "0.98", "--no-activate"],
        ),
        ("router eval", ["router", "eval", "--task", "qa"]),
        ("report live", ["report", "live"]),
    ]


def herd_argv(args: Sequence[str]) -> list[str]:
    """`herd ARGS` as a user types it: this virtualenv's `herd` script, else `python -m herd`."""
    script = Path(sys.executable).with_name("herd")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "herd", *args]


def run_once(label: str, args: Sequence[str], env: dict[str, str], log: Path, timeout: float) -> Timed:
    """One whole process: wall seconds until reaped and its peak RSS (MiB); its output goes to `log`.
    Killed after `timeout` seconds (wall_s None; its peak read just before). The exit status is kept:
    1 is calibrate refusing a choice (an answer); 2 is router eval after a router train that was
    killed (no router to evaluate), the log says which."""
    with log.open("ab") as out:
        out.write(f"\n$ herd {' '.join(args)}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(herd_argv(args), env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                peak = peak_mib(proc.pid)
                proc.kill()
                proc.wait()
                return Timed(label, None, peak, -9)
            time.sleep(0.05)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return Timed(label, wall, usage.ru_maxrss / 1024, proc.returncode)  # ru_maxrss: KiB on Linux


def load(
    svc: Services, n_models: int, prompts: int, work: Path, seed: int, analyze: bool
) -> tuple[Path, float]:
    """An empty ledger, then the n-model herd's jobs; returns (its herd file, seconds to load)."""
    herd = many_models.Herd.of(n_models)
    herd_file = work / f"herd{n_models}.yaml"
    herd_file.write_text(herd.yaml(), encoding="utf-8")
    reset(svc)
    started = time.perf_counter()
    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        if svc.embedded:  # a throwaway server: keep the statistics of a job that has just landed
            for table in LEDGER:
                conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = {'on' if analyze else 'off'})")
        with conn.transaction():
            many_models.load(conn, herd, prompts, seed=seed)
        if analyze:
            conn.execute(f"ANALYZE {', '.join(LEDGER)}")
    return herd_file, time.perf_counter() - started


def stop_orphans(database_url: str) -> None:
    """Terminate the server backends of killed commands (APP_NAME), so none runs on."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
        )


def timed_commands(
    svc: Services, herd_file: Path, n_models: int, src: Path | None, log: Path, timeout: float
) -> list[Timed]:
    """Router train (setup) then every command, each in a fresh process killed after `timeout` s."""
    env = herd_env(svc, herd_file, COLUMNS="200", PGAPPNAME=APP_NAME)
    env = baseline.env_for(env, src) if src is not None else env
    timed = [run_once("router train (setup)", ["router", "train", "cal", "--task", "qa"], env, log, timeout)]
    if timed[-1].wall_s is None:
        stop_orphans(svc.database_url)
    for label, args in commands(many_models.Herd.of(n_models)):
        timed.append(run_once(label, args, env, log, timeout))
        if timed[-1].wall_s is None:
            stop_orphans(svc.database_url)
    return timed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nine_models", description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=1500, help="prompts per job (calibration and live)")
    p.add_argument("--models", default="3,9", help="herd sizes, comma-separated (the first is the baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--analyze", action="store_true", help="ANALYZE the ledger after loading it")
    p.add_argument("--skip-old-view", action="store_true", help="skip the runs under 0009's attempt_costs")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds before a command under 0009's view is killed (others: 10x)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (herd files, command output)")
    baseline.add_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sizes = [int(s) for s in args.models.split(",") if s.strip()]
    if not sizes or min(sizes) < 2:
        print("error: --models: comma-separated herd sizes of at least 2 models", file=sys.stderr)
        return 2
    print(f"nine_models: {args.prompts:,} prompts per job; {machine_state()}", flush=True)
    rows = []
    # (who, attempt_costs definition, source tree); the baselines first.
    variants: list[tuple[str, str, Path | None]] = [("0009's view", "old", None)]
    variants = [] if args.skip_old_view else variants
    if args.baseline_src:
        variants.append((f"baseline {args.baseline_src.name}", "new", args.baseline_src))
    variants.append(("this Herd", "new", None))
    with work_dir("herd-nine-", keep=args.keep) as work, stack(work) as (svc, _):
        for n in sizes:
            herd_file, loaded_s = load(svc, n, args.prompts, work, args.seed, args.analyze)
            print(f"{n} models: ledger loaded in {loaded_s:.1f} s", flush=True)
            for who, view, src in variants:
                with psycopg.connect(svc.database_url, autocommit=True) as conn:
                    attempt_costs_view(conn, view)
                    conn.execute("DELETE FROM routers")  # router eval: the version trained just before
                    conn.execute("DELETE FROM policies")
                print(f"{n} models, {who}: load average {os.getloadavg()[0]:.1f}", flush=True)
                log = work / f"herd{n}-{who.replace(' ', '_')}.log"
                timeout = args.timeout if view == "old" else 10 * args.timeout
                for t in timed_commands(svc, herd_file, n, src, log, timeout):
                    met = (
                        t.wall_s is not None
                        and t.wall_s < GOAL_S
                        and t.peak_mb < GOAL_MB
                        and t.status in (0, 1)
                    )
                    wall = f"{t.wall_s:.1f}" if t.wall_s is not None else f"killed at {timeout:.0f}"
                    peak = f"{t.peak_mb:,.0f}" if t.wall_s is not None else f">= {t.peak_mb:,.0f}"
                    goal = "met" if met else "MISSED"
                    rows.append([f"{n} models, {who}", t.label, wall, peak, f"{t.status}", goal])
                    print(f"  {t.label}: {wall} s, {peak} MiB (exit {t.status})", flush=True)
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(table(["herd", "command", "wall s", "peak MiB", "exit", "goal"], rows))
    print(f"\n(this benchmark's own peak: {parent:,.0f} MiB; goal: under {GOAL_S:.0f} s, {GOAL_MB:.0f} MiB)")
    print(machine_state())
    return 0


if __name__ == "__main__":
    run(main)

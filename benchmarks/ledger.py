"""Load a synthetic ledger into a database, for benchmarks and for trying Herd's reports on a big one.

    python -m benchmarks.ledger DATABASE_URL [--attempts 1000000] [--endpoints 4] [--jobs N]

Appends about `--attempts` attempts (two models, half the prompts escalated, `--jobs` jobs of 100,000
attempts by default; benchmarks/_lib/synthetic_ledger.py has the shape) to the migrated database at
DATABASE_URL, then VACUUM ANALYZE; prints a line per job and the time the whole load took.
"""

from __future__ import annotations

import argparse
import time

import psycopg

from benchmarks._lib.entry import run
from benchmarks._lib.synthetic_ledger import default_jobs, load


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("database_url", help="a migrated Herd database (`herd migrate`); rows are appended")
    p.add_argument("--attempts", type=int, default=1_000_000)
    p.add_argument("--endpoints", type=int, default=4, help="per model")
    p.add_argument("--jobs", type=int, help="default: one per 100,000 attempts")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        started = time.perf_counter()
        jobs = args.jobs or default_jobs(args.attempts)
        load(conn, args.attempts, endpoints=args.endpoints, jobs=jobs, progress=print)
        conn.execute("VACUUM ANALYZE")
        print(f"loaded {args.attempts} attempts in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run(main)

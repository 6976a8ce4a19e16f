"""A synthetic ledger for benchmarks: N attempts over M endpoints with realistic overlaps.

Shape: two models (`small`, `big`), `endpoints` endpoints each; every prompt is answered by `small`,
half of them escalate to `big`, so prompts = attempts / 1.5; `jobs` jobs one after the other, like
nightly runs (benchmarks use one per 100,000 attempts, so a job is the same size in a 1M and a 10M
ledger and a report's time can be compared across ledger sizes). Attempts finish at `rate` per second
overall with busy_s uniform in [0.2, 2.2) s, so each endpoint has ~rate * 1.2 / (2 * endpoints)
requests in flight, the way a batching server does.

Rows are generated inside Postgres (INSERT ... SELECT FROM generate_series), which is faster than
COPY from Python since nothing crosses the socket; seeded, so two loads give the same ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

T0 = "2026-01-01 00:00:00+00"
JOB_ATTEMPTS = 100_000  # attempts per job by default


def load(
    conn: psycopg.Connection,
    attempts: int,
    *,
    endpoints: int = 4,
    jobs: int = 10,
    rate: float = 100.0,
    seed: float = 0.42,
    t0: str = T0,
    prefix: str = "bench",
    progress: Callable[[str], None] | None = None,
) -> None:
    """Append a ledger of about `attempts` attempts in `jobs` jobs `<prefix>0`, `<prefix>1`, ... run one
    after the other from `t0` (a timestamptz literal; rate: attempts finished per second overall). One
    job per statement, so a 10M ledger never holds all its rows in one transaction; `progress` gets a
    line per job."""
    prompts = attempts * 2 // 3
    per_job = max(1, prompts // jobs)
    conn.execute("SELECT setseed(%s)", (seed,))
    for j in range(jobs):
        t = time.perf_counter()
        lo, hi = j * per_job, (prompts if j == jobs - 1 else (j + 1) * per_job)
        row = conn.execute(
            "INSERT INTO jobs (name, task, entry_model) VALUES (%s, 'qa', 'small') RETURNING id",
            (f"{prefix}{j}",),
        ).fetchone()
        assert row is not None
        params = {"job": row[0], "lo": lo, "hi": hi - 1, "endpoints": endpoints, "rate": rate, "t0": t0}
        conn.execute(
            """INSERT INTO prompts (job_id, doc_key, text, content_hash, state, model, finished_at)
               SELECT %(job)s, 'd' || i, 'text', md5(i::text), 'done', 'small', now()
               FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) i""",
            params,
        )
        # Attempt k of the run finishes at k / rate s after T0 (plus jitter); small answers every
        # prompt in order, big the odd ones, interleaved in time as escalations are.
        conn.execute(
            """WITH p AS (SELECT id, %(lo)s + row_number() OVER (ORDER BY id) - 1 AS i
                          FROM prompts WHERE job_id = %(job)s),
                    a AS (SELECT p.id AS prompt_id, m.model, m.model = 'big' AS esc,
                                 (p.i * 3 / 2 + (m.model = 'big')::int) AS k
                          FROM p CROSS JOIN (VALUES ('small'), ('big')) m(model)
                          WHERE m.model = 'small' OR p.i %% 2 = 1)
               INSERT INTO attempts (prompt_id, model, stage, round, status, answer, escalated, endpoint,
                                     busy_s, gpu_count, usd_per_gpu_hour, latency_s, started_at,
                                     finished_at, prompt_tokens, generated_tokens)
               SELECT prompt_id, model, 'answer', 0, 'ok', 'an answer', model = 'small' AND NOT esc,
                      'http://' || model || '-' || (k %% %(endpoints)s), b, 1, 0.8, b + 0.05,
                      f - make_interval(secs => b + 0.05), f, 100, 20
               FROM (SELECT a.*, round((0.2 + random() * 2)::numeric, 3)::float8 AS b,
                            %(t0)s::timestamptz + make_interval(
                                secs => round((k / %(rate)s + random() * 0.5)::numeric, 6)::float8) AS f
                     FROM a ORDER BY k) x""",
            params,
        )
        conn.execute(
            """INSERT INTO finals (prompt_id, attempt_id, model, answer)
               SELECT DISTINCT ON (a.prompt_id) a.prompt_id, a.id, a.model, 'an answer'
               FROM attempts a JOIN prompts p ON p.id = a.prompt_id AND p.job_id = %(job)s
               ORDER BY a.prompt_id, a.model = 'big' DESC""",
            params,
        )
        if progress:
            progress(f"job {prefix}{j}: {hi - lo:,} prompts in {time.perf_counter() - t:.1f} s")


def default_jobs(attempts: int) -> int:
    """One job per JOB_ATTEMPTS attempts (at least one)."""
    return max(1, attempts // JOB_ATTEMPTS)

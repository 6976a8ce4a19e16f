"""What the fault-injection run (benchmarks/faults.py) reads once the job has drained: the ledger's
guarantees, the calls the endpoint doubles received against the attempts recorded, the workers' logs,
and, when it has not drained, what is stuck."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import redis

MODELS = ("small", "medium", "large")
DOC_RE = re.compile(r"\bq(\d{5})\b")  # the doc key in a prompt's text (`question q00042 ...`)

AttemptRow = tuple[str, str, str, int]  # doc key, model, status, retries


@dataclass(frozen=True)
class LedgerFigures:
    states: dict[str, int]  # prompts per state
    duplicate_finals: int  # prompts with more than one final (impossible by constraint: counted anyway)
    duplicate_attempts: int  # more than one attempt per (prompt, model, stage, round)
    done_without_final: int
    final_not_done: int
    failed_without_reason: int
    failure_reasons: dict[str, int]  # grouped (_norm), most common first
    finals_by_model: dict[str, int]
    last_finished: list[str]  # the last prompts to finish, each with its attempts' timeline


@dataclass(frozen=True)
class CallFigures:
    """Calls the doubles received (from call logs that survive restarts) against attempts recorded and
    the retries each carries; what is left over is wasted GPU."""

    calls: dict[str, int]  # per model
    calls_total: int
    attempts: dict[str, int]  # per model
    attempts_total: int
    retries_total: int
    calls_beyond_one_per_step: int
    calls_beyond_step_and_retries: int
    calls_for_steps_without_attempt: int
    retries_not_reaching_endpoint: int  # refused while the endpoint was down
    faults_drawn: dict[str, dict[str, int]]  # per model, per fault kind ("none": answered)


@dataclass(frozen=True)
class LogFigures:
    tracebacks: int
    task_exceptions: dict[str, int]  # Celery's "raised unexpected", grouped
    error_lines: dict[str, int]  # other ERROR/CRITICAL lines, the 15 most common


def norm(reason: str) -> str:
    """Group failure reasons: URLs, ids and numbers other than HTTP statuses do not make a new reason."""
    reason = re.sub(r"https?://\S+", "<url>", reason)
    reason = re.sub(r"\b(0x[0-9a-f]+|[0-9a-f]{8}-[0-9a-f-]{27})\b", "<id>", reason)
    reason = re.sub(r"(?<![\w.])\d+\.\d+(?![\w.])", "<n>", reason)
    reason = re.sub(r"\bq\d{5}\b", "<doc>", reason)
    return reason[:160]


def ledger_figures(db_url: str, t0_wall: float) -> tuple[LedgerFigures, list[AttemptRow]]:
    """The ledger's figures, and every attempt (for `call_figures`); `t0_wall`: epoch seconds of submit."""
    with psycopg.connect(db_url, autocommit=True) as conn:

        def count(query: LiteralString) -> int:
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0

        states = {
            str(s): int(n) for s, n in conn.execute("SELECT state, count(*) FROM prompts GROUP BY state")
        }
        reasons: collections.Counter[str] = collections.Counter()
        for (error,) in conn.execute("SELECT error FROM prompts WHERE state = 'failed'"):
            reasons[norm(error or "<no reason>")] += 1
        attempts = conn.execute(
            "SELECT p.doc_key, a.model, a.status, a.retries "
            "FROM attempts a JOIN prompts p ON p.id = a.prompt_id"
        ).fetchall()
        finals = conn.execute("SELECT model, count(*) FROM finals GROUP BY 1").fetchall()
        # The last prompts to finish, with each attempt's (start..end) in seconds after submit.
        tail = conn.execute(
            """SELECT p.doc_key, p.state, extract(epoch FROM p.finished_at)::float8 - %(t0)s,
                      (SELECT string_agg(format('%%s %%s r%%s %%s..%%ss', a.model, a.status, a.retries,
                                round((extract(epoch FROM a.started_at) - %(t0)s)::numeric, 1),
                                round((extract(epoch FROM a.finished_at) - %(t0)s)::numeric, 1)), ', '
                                ORDER BY a.id)
                       FROM attempts a WHERE a.prompt_id = p.id)
               FROM prompts p WHERE p.finished_at IS NOT NULL ORDER BY p.finished_at DESC LIMIT 5""",
            {"t0": t0_wall},
        ).fetchall()
        figures = LedgerFigures(
            states=states,
            duplicate_finals=count(
                "SELECT count(*) FROM (SELECT prompt_id FROM finals GROUP BY 1 HAVING count(*) > 1) d"
            ),
            duplicate_attempts=count(
                "SELECT count(*) FROM (SELECT 1 FROM attempts GROUP BY prompt_id, model, stage, round "
                "HAVING count(*) > 1) d"
            ),
            done_without_final=count(
                "SELECT count(*) FROM prompts p WHERE p.state = 'done' "
                "AND NOT EXISTS (SELECT FROM finals f WHERE f.prompt_id = p.id)"
            ),
            final_not_done=count(
                "SELECT count(*) FROM finals f JOIN prompts p ON p.id = f.prompt_id WHERE p.state <> 'done'"
            ),
            failed_without_reason=count(
                "SELECT count(*) FROM prompts WHERE state = 'failed' AND coalesce(trim(error), '') = ''"
            ),
            failure_reasons=dict(reasons.most_common()),
            finals_by_model={str(m): int(n) for m, n in finals},
            last_finished=[f"{d} {s} at t={f:.1f}s: {a}" for d, s, f, a in tail],
        )
    return figures, [(str(d), str(m), str(s), int(r)) for d, m, s, r in attempts]


def call_figures(work: Path, attempt_rows: list[AttemptRow]) -> CallFigures:
    """From the doubles' call logs (`<work>/calls-<model>.jsonl`) and the attempts recorded."""
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    faults: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in MODELS}
    total: collections.Counter[str] = collections.Counter()
    for model in MODELS:
        path = work / f"calls-{model}.jsonl"
        for line in path.read_text().splitlines() if path.exists() else ():
            try:
                call = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            doc = DOC_RE.search(call.get("prompt", ""))
            if doc is None:
                continue
            calls[(f"q{doc.group(1)}", model)] += 1
            total[model] += 1
            faults[model][call.get("fault") or "none"] += 1
    # The recorded call plus one per retry before it.
    expected = {(doc_key, model): retries + 1 for doc_key, model, _status, retries in attempt_rows}
    beyond = without_attempt = fewer = 0
    for step, n in calls.items():
        want = expected.get(step, 0)
        if want == 0:
            without_attempt += n
        beyond += max(0, n - want)
    for step, want in expected.items():
        fewer += max(0, want - calls.get(step, 0))  # refused while the endpoint was down
    retries: collections.Counter[str] = collections.Counter()
    for _doc, model, _status, r in attempt_rows:
        retries[model] += r
    return CallFigures(
        calls=dict(total),
        calls_total=sum(total.values()),
        attempts=dict(collections.Counter(row[1] for row in attempt_rows)),
        attempts_total=len(attempt_rows),
        retries_total=sum(retries.values()),
        calls_beyond_one_per_step=sum(total.values()) - len(attempt_rows),
        calls_beyond_step_and_retries=beyond,
        calls_for_steps_without_attempt=without_attempt,
        retries_not_reaching_endpoint=fewer,
        faults_drawn={m: dict(c) for m, c in faults.items()},
    )


def log_figures(logs: Iterable[Path]) -> LogFigures:
    """Errors and tracebacks the workers logged, grouped."""
    tracebacks = 0
    errors: collections.Counter[str] = collections.Counter()
    unexpected: collections.Counter[str] = collections.Counter()
    for log in logs:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
            if line.startswith("Traceback"):
                tracebacks += 1
            m = re.search(r"raised unexpected: (.*)", line)
            if m:
                unexpected[norm(m.group(1))[:140]] += 1
            elif re.search(r"\b(ERROR|CRITICAL)\b", line):
                msg = re.sub(r"^\[[^\]]*\]\s*", "", line)
                msg = re.sub(r"\[[0-9a-f-]{36}\]", "[<task>]", msg)
                errors[norm(msg)[:140]] += 1
    return LogFigures(tracebacks, dict(unexpected.most_common()), dict(errors.most_common(15)))


def stuck_report(db_url: str, broker_url: str, workers_alive: dict[str, bool]) -> dict[str, Any]:
    """What is not finished, as JSON-ready data: states per step with ages, queue lengths, workers."""
    out: dict[str, Any] = {}
    try:
        with psycopg.connect(db_url, connect_timeout=3, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT state, model, stage, round, count(*), "
                "round(extract(epoch FROM now() - min(enqueued_at))::numeric, 1) "
                "FROM prompts WHERE state NOT IN ('done', 'failed') GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"
            ).fetchall()
            out["open_steps"] = [
                {
                    "state": s,
                    "model": m,
                    "stage": st,
                    "round": r,
                    "count": n,
                    "oldest_enqueued_s": float(a or 0),
                }
                for s, m, st, r, n, a in rows
            ]
            sample = conn.execute(
                "SELECT doc_key, state, model, stage, enqueued_at FROM prompts "
                "WHERE state NOT IN ('done', 'failed') ORDER BY id LIMIT 5"
            ).fetchall()
            out["open_sample"] = [f"{d} {s} at {m}/{st} since {e}" for d, s, m, st, e in sample]
    except psycopg.Error as exc:
        out["postgres"] = f"unreachable: {exc}"
    try:
        client = redis.Redis.from_url(broker_url, socket_timeout=3, socket_connect_timeout=3)
        queues = {f"herd.{m}": int(client.llen(f"herd.{m}")) for m in MODELS}
        out["redis"] = {**queues, "unacked": int(client.hlen("unacked"))}
        client.close()
    except redis.RedisError as exc:
        out["redis"] = f"unreachable: {exc}"
    out["workers_alive"] = workers_alive
    return out

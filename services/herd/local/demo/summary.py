"""The demo's per-model table: what each model did in the live jobs, with latency and tokens.

Accuracy is not here: a later model's accuracy on the prompts escalated to it is not what it scores
alone. The comparison on the rest of the set (herd/local/demo/compare.py) has each
model alone on the same prompts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import psycopg
from rich.console import Console

from herd.reporting.tables import Column, print_table


@dataclass
class ModelLine:
    answered: int = 0
    escalated: int = 0
    kept: int = 0
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0


def collect(conn: psycopg.Connection, jobs: dict[str, str]) -> dict[str, ModelLine]:
    rows = conn.execute(
        """SELECT a.model, a.status, a.escalated, a.latency_s, a.prompt_tokens, a.generated_tokens,
                  f.attempt_id IS NOT NULL
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id
           LEFT JOIN finals f ON f.attempt_id = a.id
           WHERE j.name = ANY(%s) ORDER BY a.id""",
        (list(jobs),),
    ).fetchall()
    models: dict[str, ModelLine] = defaultdict(ModelLine)
    for model, status, escalated, latency, tin, tout, is_final in rows:
        line = models[model]
        if status != "ok":
            continue
        line.answered += 1
        line.escalated += bool(escalated)
        line.kept += bool(is_final)
        line.latency_s += latency or 0.0
        line.tokens_in += tin or 0
        line.tokens_out += tout or 0
    return dict(models)


# Short headers so the table fits 80 columns; the long labels name the figures when a table
# does not fit and prints one block per row instead (herd/reporting/tables.py).
PER_MODEL = (
    Column("model", numeric=False),
    Column("answered"),
    Column("escalated", "escalated onward"),
    Column("final", "kept as final"),
    Column("latency", "mean latency"),
    Column("tokens in/out"),
)


def print_summary(conn: psycopg.Connection, jobs: dict[str, str], console: Console) -> None:
    """Per model over `jobs` (job name -> task)."""
    per_model = []
    for name, line in collect(conn, jobs).items():
        mean = f"{line.latency_s / line.answered:.2f}s" if line.answered else "-"
        rate = line.escalated / max(line.answered, 1)
        per_model.append(
            [
                name,
                str(line.answered),
                f"{line.escalated} ({rate:.0%})",
                str(line.kept),
                mean,
                f"{line.tokens_in}/{line.tokens_out}",
            ]
        )
    print_table(console, PER_MODEL, per_model, title="per model, live jobs")

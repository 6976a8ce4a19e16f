"""The demo's closing tables: what each model did, and whether escalation bought accuracy."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import psycopg
from rich.console import Console

from herd.herdfile.model import HerdConfig
from herd.quality.scorers import correct
from herd.reporting.tables import Column, print_table


@dataclass
class ModelLine:
    answered: int = 0
    escalated: int = 0
    kept: int = 0
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass
class TaskLine:
    """Accuracy per model on the prompts that model answered, and of the final answers."""

    answered: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    finals: list[bool] = field(default_factory=list)
    final_models: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def collect(
    conn: psycopg.Connection, herd: HerdConfig, jobs: dict[str, str]
) -> tuple[dict[str, ModelLine], dict[str, TaskLine]]:
    rows = conn.execute(
        """SELECT j.name, a.model, a.status, a.answer, a.escalated, a.latency_s, a.prompt_tokens,
                  a.generated_tokens, p.reference, f.attempt_id IS NOT NULL
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id JOIN jobs j ON j.id = p.job_id
           LEFT JOIN finals f ON f.attempt_id = a.id
           WHERE j.name = ANY(%s) ORDER BY a.id""",
        (list(jobs),),
    ).fetchall()
    models: dict[str, ModelLine] = defaultdict(ModelLine)
    tasks: dict[str, TaskLine] = defaultdict(TaskLine)
    for job, model, status, answer, escalated, latency, tin, tout, reference, is_final in rows:
        line = models[model]
        if status != "ok":
            continue
        line.answered += 1
        line.escalated += bool(escalated)
        line.kept += bool(is_final)
        line.latency_s += latency or 0.0
        line.tokens_in += tin or 0
        line.tokens_out += tout or 0
        task_name = jobs[job]
        verdict = correct(herd.tasks[task_name], answer, reference)
        if verdict is not None:
            tasks[task_name].answered[model].append(verdict)
            if is_final:
                tasks[task_name].finals.append(verdict)
                tasks[task_name].final_models[model] += 1
    return dict(models), dict(tasks)


def _pct(values: list[bool]) -> str:
    return f"{sum(values) / len(values):.1%}" if values else "-"


# Short headers so both tables fit 80 columns; the long labels name the figures when a table
# does not fit and prints one block per row instead (herd/reporting/tables.py).
PER_MODEL = (
    Column("model", numeric=False),
    Column("answered"),
    Column("escalated", "escalated onward"),
    Column("final", "kept as final"),
    Column("latency", "mean latency"),
    Column("tokens in/out"),
)
PER_TASK = (
    Column("task", numeric=False),
    Column("model", numeric=False),
    Column("answered"),
    Column("accuracy", "accuracy on those"),
    Column("finals", "final answers"),
    Column("final acc.", "final accuracy"),
)


def print_summary(conn: psycopg.Connection, herd: HerdConfig, jobs: dict[str, str], console: Console) -> None:
    models, tasks = collect(conn, herd, jobs)
    per_model = []
    for name, line in models.items():
        mean = f"{line.latency_s / line.answered:.2f}s" if line.answered else "-"
        rate = line.escalated / max(line.answered, 1)
        per_model.append([name, str(line.answered), f"{line.escalated} ({rate:.0%})", str(line.kept), mean,
                          f"{line.tokens_in}/{line.tokens_out}"])  # fmt: skip
    print_table(console, PER_MODEL, per_model, title="per model")
    per_task = []
    for task_name, task_line in tasks.items():
        for i, (model, verdicts) in enumerate(task_line.answered.items()):
            per_task.append([
                task_name if i == 0 else "", model, str(len(verdicts)), _pct(verdicts),
                str(task_line.final_models.get(model, 0)), _pct(task_line.finals) if i == 0 else "",
            ])  # fmt: skip
    print_table(console, PER_TASK, per_task, title="per task (accuracy against the bundled references)",
                key_columns=2)  # fmt: skip
    console.print(
        "A model's accuracy is measured on the prompts it answered: the entry model answers every "
        "prompt, so compare its accuracy with the final accuracy (of the answers kept as final) to see "
        "what escalation bought."
    )

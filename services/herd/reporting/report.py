"""`herd report JOB`: what a job cost per model and per policy, what it bought, and PeRFICS.

Every number comes from the reporting views of migration 0003 (job_costs, job_model_costs,
perfics_inputs), never from the tables: a user in psql and `herd report` see the same numbers.
Money stays Decimal end to end; the table rounds for reading, csv/json keep full precision.
"""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Table
from rich.text import Text

from herd.jobs.status import UnknownJobError
from herd.reporting import perfics
from herd.reporting.perfics import PolicyInput, Weights

FORMATS = ("table", "csv", "json", "html")
_KIND_ORDER = {"model": 0, "cascade": 1, "counterfactual": 2}


class UnknownScorerError(LookupError):
    pass


@dataclass(frozen=True)
class JobSummary:
    job: str
    task: str
    prompts: int
    done: int
    failed: int
    window_start: datetime | None
    window_end: datetime | None
    attributed_gpu_hours: Decimal
    cost_usd: Decimal
    provisioned_gpu_hours: Decimal
    provisioned_cost_usd: Decimal
    cost_per_1k_prompts_usd: Decimal | None


@dataclass(frozen=True)
class Row:
    """One model or policy. kind: 'model', 'cascade' or 'counterfactual' ('<entry model>-only')."""

    policy: str
    kind: str
    prompts: int
    escalations: int
    refinements: int
    refinement_rounds: Decimal
    quality_base: float | None
    quality_refined: float | None
    cost_usd: Decimal
    gpu_hours: Decimal
    cost_per_1k_prompts_usd: Decimal
    latency_p50_s: float | None
    latency_p95_s: float | None
    provisioned_gpu_hours: Decimal | None
    provisioned_cost_usd: Decimal | None
    perfics: float | None
    rank: int | None


@dataclass(frozen=True)
class Report:
    summary: JobSummary
    scorer: str | None  # the scorer the qualities and PeRFICS use; None when the job has no scores
    scorers: list[str]  # every scorer with scores in the job
    weights: Weights
    rows: list[Row]


def _query(conn: psycopg.Connection, sql: str, job: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, (job,))
        return cur.fetchall()


def build(
    conn: psycopg.Connection, job: str, *, scorer: str | None = None, weights: Weights | None = None
) -> Report:
    weights = weights or Weights()
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if idle:
            # One snapshot for the three views: workers may record attempts between the queries.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        found = _query(conn, "SELECT * FROM job_costs WHERE job = %s", job)
        if not found:
            raise UnknownJobError(f"no job named {job!r}")
        models = {r["model"]: r for r in _query(conn, "SELECT * FROM job_model_costs WHERE job = %s", job)}
        inputs = _query(conn, "SELECT * FROM perfics_inputs WHERE job = %s", job)
    summary = JobSummary(**{f.name: found[0][f.name] for f in fields(JobSummary)})
    scorers = sorted({r["scorer"] for r in inputs if r["scorer"] is not None})
    if scorer is not None and scorer not in scorers:
        have = ", ".join(scorers) or "none (run `herd score` first)"
        raise UnknownScorerError(f"job {job!r} has no scores from {scorer!r}; its scorers: {have}")
    # Default: the only scorer, or the first by name (the report names the others).
    chosen = scorer if scorer is not None else (scorers[0] if scorers else None)
    inputs = [r for r in inputs if r["scorer"] == chosen]
    # Models by how many prompts they saw (the entry tier first), then the cascade, then the
    # counterfactual.
    inputs.sort(key=lambda r: (_KIND_ORDER.get(r["kind"], 3), -r["prompts"], r["policy"]))
    scores = perfics.score(
        [PolicyInput(**{f.name: r[f.name] for f in fields(PolicyInput)}) for r in inputs], weights
    )
    rows = [
        Row(
            **{name: r[name] for name in _FROM_INPUTS},
            **_model_figures(r, models, summary),
            perfics=score.perfics,
            rank=score.rank,
        )
        for r, score in zip(inputs, scores, strict=True)
    ]
    return Report(summary, chosen, scorers, weights, rows)


# Row fields read from perfics_inputs as they are, and from job_model_costs (see _model_figures).
_FROM_INPUTS = tuple(
    """policy kind prompts refinement_rounds quality_base quality_refined
       cost_usd gpu_hours cost_per_1k_prompts_usd""".split()
)
_FROM_MODELS = tuple(
    "escalations refinements latency_p50_s latency_p95_s provisioned_gpu_hours provisioned_cost_usd".split()
)


def _model_figures(
    r: dict[str, Any], models: dict[str, dict[str, Any]], summary: JobSummary
) -> dict[str, Any]:
    """The job_model_costs figures that apply to a perfics_inputs row's policy."""
    if r["kind"] == "cascade":
        return {
            "escalations": sum(m["escalations"] for m in models.values()),
            "refinements": sum(m["refinements"] for m in models.values()),
            "latency_p50_s": None,
            "latency_p95_s": None,
            "provisioned_gpu_hours": summary.provisioned_gpu_hours,
            "provisioned_cost_usd": summary.provisioned_cost_usd,
        }
    model = r["policy"] if r["kind"] == "model" else r["policy"].removesuffix("-only")
    figures = {name: models.get(model, {}).get(name) for name in _FROM_MODELS}
    figures["escalations"] = figures["escalations"] or 0
    figures["refinements"] = figures["refinements"] or 0
    if r["kind"] == "counterfactual":
        # '<entry>-only' never escalates, and nobody provisioned a herd of one for it.
        figures.update(escalations=0, provisioned_gpu_hours=None, provisioned_cost_usd=None)
    return figures


# --- rendering ----------------------------------------------------------------------------------


def money(value: Decimal | None) -> str:
    """4 significant digits, at least 2 decimals: 12.35, 0.0004444, 1234.50; '-' when unknown."""
    if value is None:
        return "-"
    if value == 0:
        return "0.00"
    decimals = max(2, 3 - math.floor(math.log10(abs(float(value)))))
    return f"{value:.{decimals}f}"


def _num(value: float | Decimal | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_COLUMNS = (
    *("policy", "prompts", "escal.", "refine"),
    *("q base", "q refined", "cost USD", "GPU-h", "USD/1k prompts"),
    *("p50 s", "p95 s", "PeRFICS", "rank"),
)


def _cells(row: Row) -> list[str]:
    return [
        row.policy,
        str(row.prompts),
        str(row.escalations),
        str(row.refinements),
        _num(row.quality_base, ".3f"),
        _num(row.quality_refined, ".3f"),
        money(row.cost_usd),
        _num(row.gpu_hours, ".4g"),
        money(row.cost_per_1k_prompts_usd),
        _num(row.latency_p50_s, ".3f"),
        _num(row.latency_p95_s, ".3f"),
        _num(row.perfics, ".4f"),
        _num(row.rank, "d"),
    ]


def _headline(report: Report) -> list[str]:
    s = report.summary
    others = [name for name in report.scorers if name != report.scorer]
    scorer = report.scorer or "none (no scores: run `herd score`)"
    if others:
        scorer += f" (also: {', '.join(others)}; choose with --scorer)"
    window = (
        f"{s.window_start:%Y-%m-%d %H:%M:%S%z} to {s.window_end:%Y-%m-%d %H:%M:%S%z}"
        if s.window_start
        else "-"
    )
    return [
        f"job {s.job} (task {s.task}): {s.prompts} prompts, {s.done} done, {s.failed} failed; "
        f"active {window}",
        f"attributed: {money(s.cost_usd)} USD, {_num(s.attributed_gpu_hours, '.4g')} GPU-h; "
        f"provisioned: {money(s.provisioned_cost_usd)} USD, {_num(s.provisioned_gpu_hours, '.4g')} GPU-h; "
        f"{money(s.cost_per_1k_prompts_usd)} USD per 1k prompts",
        f"quality scorer: {scorer}; PeRFICS weights {report.weights}",
    ]


def render_table(report: Report, console: Console) -> None:
    for line in _headline(report):
        console.print(line, markup=False, soft_wrap=True)
    table = Table()
    for name in TABLE_COLUMNS:
        # Fold rather than truncate: on a narrow terminal a figure wraps, it never loses digits.
        table.add_column(name, overflow="fold", justify="left" if name == "policy" else "right")
    for row in report.rows:
        table.add_row(*(Text(cell) for cell in _cells(row)))  # Text: a '[' in a model name is not markup
    console.print(table)


def _plain(value: Any) -> Any:
    """csv/json-ready: Decimal as fixed-point text at full precision (never 1E-7), datetime as ISO 8601."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


CSV_COLUMNS = ("job", "task", "scorer", *(f.name for f in fields(Row)))


def render(report: Report, fmt: str, out: IO[str]) -> None:
    """One of FORMATS to `out`."""
    s = report.summary
    if fmt == "table":
        # A terminal sets its own width; a file or pipe gets room for every column on one line.
        render_table(report, Console(file=out, width=None if out.isatty() else 200))
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in report.rows:
            plain = {k: _plain(v) for k, v in asdict(row).items()}
            writer.writerow({"job": s.job, "task": s.task, "scorer": report.scorer, **plain})
    elif fmt == "json":
        doc = {
            "job": {k: _plain(v) for k, v in asdict(s).items()},
            "scorer": report.scorer,
            "scorers": report.scorers,
            "weights": asdict(report.weights),
            "rows": [{k: _plain(v) for k, v in asdict(row).items()} for row in report.rows],
        }
        json.dump(doc, out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "html":
        out.write(_html(report))
    else:
        raise ValueError(f"unknown report format {fmt!r}")


def _html(report: Report) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in _cells(row)) + "</tr>\n" for row in report.rows
    )
    lines = "".join(f"<p>{esc(line)}</p>\n" for line in _headline(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Herd report: {esc(report.summary.job)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th:first-child,td:first-child{{text-align:left}} th{{background:#f4f4f4}}</style></head>
<body><h1>Herd report: {esc(report.summary.job)}</h1>
{lines}<table><thead><tr>{head}</tr></thead>
<tbody>
{body}</tbody></table></body></html>
"""


# --- plot ---------------------------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (cost, quality, label) points no other point beats on both: cheaper-or-equal and better."""
    front: list[tuple[float, float, str]] = []
    for cost, quality, label in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or quality > front[-1][1]:
            front.append((cost, quality, label))
    return front


def plot(report: Report, path: Path) -> None:
    """Refined quality against cost per 1k prompts, each model and policy labelled, Pareto front."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: slow import
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    # Policies that coincide ('small-only' is often exactly 'small') share one point and one label.
    labels: dict[tuple[float, float], list[str]] = {}
    kinds: dict[tuple[float, float], str] = {}
    for r in report.rows:
        if r.quality_refined is not None:
            xy = (float(r.cost_per_1k_prompts_usd), r.quality_refined)
            labels.setdefault(xy, []).append(r.policy)
            kinds.setdefault(xy, r.kind)
    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no global pyplot state
    ax = fig.add_subplot()
    for kind, marker, name in (
        ("model", "o", "model"),
        ("cascade", "D", "policy"),
        ("counterfactual", "D", ""),
    ):
        xys = [xy for xy, k in kinds.items() if k == kind]
        if xys:
            ax.scatter(*zip(*xys, strict=True), marker=marker, color="tab:blue", zorder=2, label=name or None)
    for (cost, quality), names in labels.items():
        ax.annotate(", ".join(names), (cost, quality), textcoords="offset points", xytext=(7, 5), fontsize=9)
    if labels:
        front = pareto_front([(x, y, "") for x, y in labels])
        xs, ys = [p[0] for p in front], [p[1] for p in front]
        ax.step(xs, ys, where="post", color="tab:red", label="Pareto front", zorder=1)
        ax.scatter(xs, ys, s=130, facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=3)
        costs = [x for x, _ in labels]
        # Costs often span orders of magnitude; a log axis matches PeRFICS' log2 cost term.
        if min(costs) > 0 and max(costs) / min(costs) >= 10:
            ax.set_xscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.2, not 2 x 10^-1
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no quality scores (run `herd score`)", ha="center", transform=ax.transAxes)
    ax.set_xlabel("cost per 1k prompts (USD, attributed)")
    ax.set_ylabel(f"quality, refined ({report.scorer or 'no scorer'})")
    ax.set_title(f"Herd job {report.summary.job}: quality vs cost")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, format="png", dpi=120)
    partial.replace(path)

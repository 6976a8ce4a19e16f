"""`herd report JOB`, step two: a Report (build.py) as a table, csv, json or html.

The table answers "what did each policy cost and what did it buy" in six columns that fit an
80-column terminal (policy, prompts, quality, USD/1k, PeRFICS, rank); `--wide` adds the other
seven (escalations, refinements, base quality, cost, GPU-hours, latency). We chose a compact
default over always printing blocks because a table compares policies at a glance, which is the
report's point; any table that still does not fit the terminal (--wide at 80 columns, very long
model names) prints one block per policy instead of folding cells (reporting/tables.py).

csv and json are for programs: every figure is a number. Decimal figures (USD, GPU-hours,
refinement rounds) are rounded half-even to DECIMAL_PLACES = 6 places, a millionth of a dollar
and 3.6 ms of a GPU-hour; the views keep full precision for anyone who needs it (docs/sql.md).
Floats (quality, latency, PeRFICS) are as computed; unknown values are null (json) or empty (csv).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from herd.jobs.spreadsheet import safe_row
from herd.reporting.audit import lines as audit_lines
from herd.reporting.build import ROUTED_ENTRY, Report, Row
from herd.reporting.tables import Column, print_table
from herd.reporting.versions import lines

FORMATS = ("table", "csv", "json", "html")
DECIMAL_PLACES = 6
_QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)
# Width of a file or pipe, unless COLUMNS says otherwise: room for the wide table on one line.
_FILE_WIDTH = 200


def money(value: Decimal | None) -> str:
    """4 significant digits, at least 2 decimals: 12.35, 0.0004444, 1234.50; '-' when unknown."""
    if value is None:
        return "-"
    if value == 0:
        return "0.00"
    decimals = max(2, 3 - math.floor(math.log10(abs(float(value)))))
    return f"{value:.{decimals}f}"


def _num(value: float | Decimal | None, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal) and value == 0:
        value = Decimal(0)  # a Decimal zero keeps its exponent: format(Decimal("0E-20"), ".4g") is "0e-20"
    return format(value, spec)


# Every column of the table: its header, its label in a block, and how a Row shows in it.
TABLE_COLUMNS: dict[str, tuple[Column, Callable[[Row], str]]] = {
    "policy": (Column("policy", numeric=False), lambda r: r.label),
    "prompts": (Column("prompts"), lambda r: str(r.prompts)),
    "escal.": (Column("escal.", "escalations"), lambda r: str(r.escalations)),
    "refine": (Column("refine", "refinements"), lambda r: str(r.refinements)),
    "q base": (Column("q base", "quality base"), lambda r: _num(r.quality_base, ".3f")),
    "q refined": (Column("q refined", "quality refined"), lambda r: _num(r.quality_refined, ".3f")),
    # Compact: "quality" is the refined quality, the quality of the answers the policy ends with.
    "quality": (Column("quality", "quality refined"), lambda r: _num(r.quality_refined, ".3f")),
    "cost USD": (Column("cost USD"), lambda r: money(r.cost_usd)),
    "GPU-h": (Column("GPU-h"), lambda r: _num(r.gpu_hours, ".4g")),
    "USD/1k": (Column("USD/1k", "USD/1k prompts"), lambda r: money(r.cost_per_1k_prompts_usd)),
    "p50 s": (Column("p50 s", "latency p50 s"), lambda r: _num(r.latency_p50_s, ".3f")),
    "p95 s": (Column("p95 s", "latency p95 s"), lambda r: _num(r.latency_p95_s, ".3f")),
    "PeRFICS": (Column("PeRFICS"), lambda r: _num(r.perfics, ".4f")),
    "rank": (Column("rank"), lambda r: _num(r.rank, "d")),
}
COMPACT_COLUMNS = ("policy", "prompts", "quality", "USD/1k", "PeRFICS", "rank")
WIDE_COLUMNS = (
    *("policy", "prompts", "escal.", "refine", "q base", "q refined"),
    *("cost USD", "GPU-h", "USD/1k", "p50 s", "p95 s", "PeRFICS", "rank"),
)


def columns(names: tuple[str, ...]) -> list[Column]:
    return [TABLE_COLUMNS[name][0] for name in names]


def cells(row: Row, names: tuple[str, ...]) -> list[str]:
    return [TABLE_COLUMNS[name][1](row) for name in names]


def _headline(report: Report) -> list[str]:
    """The job in a few lines, each short enough for 80 columns in the usual case (rich wraps words)."""
    s = report.summary
    others = [name for name in report.scorers if name != report.scorer]
    scorer = report.scorer or "none (no scores: run `herd score`)"
    if others:
        scorer += f" (also: {', '.join(others)}; choose with --scorer)"
    lines = [f"job {s.job} (task {s.task}): {s.prompts} prompts, {s.done} done, {s.failed} failed"]
    if s.window_start:
        lines.append(f"active {s.window_start:%Y-%m-%d %H:%M:%S%z} to {s.window_end:%Y-%m-%d %H:%M:%S%z}")
    lines += [
        f"attributed: {money(s.cost_usd)} USD, {_num(s.attributed_gpu_hours, '.4g')} GPU-h, "
        f"{money(s.cost_per_1k_prompts_usd)} USD/1k prompts",
        f"provisioned: {money(s.provisioned_cost_usd)} USD, {_num(s.provisioned_gpu_hours, '.4g')} GPU-h",
        f"quality (refined) scorer: {scorer}",
        f"PeRFICS weights {report.weights}",
    ]
    return lines


def render_table(report: Report, console: Console, *, wide: bool = False) -> None:
    """The headline, then the compact (or with `wide`, the full) table; blocks when it does not fit."""
    for line in _headline(report):
        console.print(Text(line))  # Text: no markup; rich wraps a long line between words
    names = WIDE_COLUMNS if wide else COMPACT_COLUMNS
    print_table(console, columns(names), [cells(row, names) for row in report.rows])
    if any(row.partial for row in report.rows):
        # A partial row's figures are on the prompts routed or escalated to it, which a reader would
        # otherwise take for what that model scores alone ("honest comparisons").
        console.print(Text(footnote(report)))
    for line in version_lines(report):
        console.print(Text(line))
    for line in audit_lines(report.audit) if report.audit is not None else []:
        console.print(Text(line))


def footnote(report: Report) -> str:
    """What a `*` row covers: the prompts escalated to a later tier or, when a router chose each
    prompt's entry model, the prompts routed to the model (as their entry) or escalated to it."""
    if report.routed:
        text = (
            "* routed per prompt: quality and cost on the prompts the router sent to it plus any "
            f"escalated to it, not on the whole job; '{ROUTED_ENTRY}' is each prompt's own entry "
            "model without escalation"
        )
    else:
        text = "* a later tier: quality and cost on the prompts escalated to it, not on the whole job"
    return text + (
        "; each model alone on every prompt of the calibration job is below" if report.alone else ""
    )


def version_lines(report: Report) -> list[str]:
    """The per-policy-version section and each model alone on the calibration job (reporting/versions.py)."""

    return lines(report.versions, report.alone, money)


def _console(out: IO[str]) -> Console:
    # A terminal sets its own width, and so does COLUMNS when set (rich reads it); a file or pipe
    # otherwise gets room for every column on one line.
    if out.isatty() or "COLUMNS" in os.environ:
        return Console(file=out)
    return Console(file=out, width=_FILE_WIDTH)


def _number(value: Any) -> Any:
    """json-ready: Decimal rounded to DECIMAL_PLACES as a number, non-finite float as null, ISO 8601."""
    if isinstance(value, Decimal):
        return float(value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _csv_cell(value: Any) -> Any:
    """csv-ready: as _number, but Decimal as fixed-point text (0.000001, never 1e-06)."""
    if isinstance(value, Decimal):
        return format(value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN), "f")
    return _number(value)


CSV_COLUMNS = ("job", "task", "scorer", *(f.name for f in fields(Row)))


def render(report: Report, fmt: str, out: IO[str], *, wide: bool = False) -> None:
    """One of FORMATS to `out`; `wide` is for the table (html always has every column)."""
    s = report.summary
    if fmt == "table":
        render_table(report, _console(out), wide=wide)
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in report.rows:
            plain = {k: _csv_cell(v) for k, v in asdict(row).items()}
            writer.writerow(safe_row({"job": s.job, "task": s.task, "scorer": report.scorer, **plain}))
    elif fmt == "json":
        doc = {
            "job": {k: _number(v) for k, v in asdict(s).items()},
            "scorer": report.scorer,
            "scorers": report.scorers,
            "weights": asdict(report.weights),
            "decimal_places": DECIMAL_PLACES,  # of the Decimal figures: USD, GPU-hours, refinement rounds
            "rows": [{k: _number(v) for k, v in asdict(row).items()} for row in report.rows],
            "policy_versions": [{k: _number(v) for k, v in asdict(r).items()} for r in report.versions],
            "models_alone": None
            if report.alone is None
            else {
                "calibration_job": report.alone.job,
                "prompts": report.alone.prompts,
                "left_out_no_answer": report.alone.unanswered,
                "rows": [{k: _number(v) for k, v in asdict(r).items()} for r in report.alone.rows],
            },
            "audit": None
            if report.audit is None
            else {
                "audit_job": report.audit.audit_job,
                "rate": report.audit.audit.rate,
                "reference": report.audit.audit.reference,
                "sampled": report.audit.sampled,
                "left_out": report.audit.left_out,
                "cost_usd": _number(report.audit.cost_usd),
                "interval_level": report.audit.level,
                "drop": report.audit.drop,
                "rows": [{k: _number(v) for k, v in asdict(r).items()} for r in report.audit.rows],
            },
        }
        json.dump(doc, out, indent=2, ensure_ascii=False, allow_nan=False)
        out.write("\n")
    elif fmt == "html":
        out.write(_html(report))
    else:
        raise ValueError(f"unknown report format {fmt!r}")


def _html(report: Report) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(column.header)}</th>" for column in columns(WIDE_COLUMNS))
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in cells(row, WIDE_COLUMNS)) + "</tr>\n"
        for row in report.rows
    )
    audit = audit_lines(report.audit) if report.audit is not None else []
    lines = "".join(f"<p>{esc(line)}</p>\n" for line in [*_headline(report), *audit])
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

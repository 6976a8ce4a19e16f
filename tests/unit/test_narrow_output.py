"""Tables at 80 columns: `herd report`, `herd status` and the demo's summary, in process and via the CLI.

Readable means: no line longer than the terminal, and every name and figure whole on one line,
never folded into slivers ("smo / llm / 2-o / nly"): a row on one table line, or a block whose
heading names the row and whose lines pair each label with its figure.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable, Sequence

import psycopg
import pytest
from rich.console import Console

from herd.cli.jobs import STATUS_COLUMNS
from herd.local.demo import run as demo
from herd.local.demo.summary import PER_MODEL, print_summary
from herd.reporting import build, render
from herd.reporting.tables import Column, print_table
from tests.support.harness import Services, herd_env
from tests.unit.test_costs import add_attempt, add_final, add_job, add_prompt, hand_job

# Names as long as real ones; the counterfactual '<entry>-only' is then the longest policy name.
SMALL, LARGE = "smollm2-135m-instruct", "qwen2.5-7b-instruct"


def rename_models(db: psycopg.Connection, names: dict[str, str]) -> None:
    for old, new in names.items():
        for table in ("attempts", "finals", "prompts"):
            db.execute(f"UPDATE {table} SET model = %s WHERE model = %s", (new, old))
        db.execute("UPDATE jobs SET entry_model = %s WHERE entry_model = %s", (new, old))


def rendered(draw: Callable[[Console], None], width: int = 80) -> list[str]:
    out = io.StringIO()
    draw(Console(file=out, width=width))
    return out.getvalue().splitlines()


def whole(word: str, line: str) -> bool:
    """`word` on `line`, not as part of a longer name ('small' is not in 'small-only')."""
    return re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w.-])", line) is not None


def assert_readable(lines: list[str], words: Sequence[str], width: int = 80) -> None:
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, "\n".join(too_long)
    for word in words:
        assert any(whole(word, line) for line in lines), f"{word!r} not whole on any line:\n" + "\n".join(
            lines
        )


def table_line(lines: list[str], cells: Sequence[str]) -> str | None:
    """The table line that holds exactly a row's cells, in order."""
    for line in lines:
        outside_first, *inside, outside_last = line.split("│") if "│" in line else ["", ""]
        if [cell.strip() for cell in inside] == list(cells) and not (outside_first + outside_last).strip():
            return line
    return None


def block(lines: list[str], heading: str) -> list[str] | None:
    """The lines of the block headed `heading`, up to the blank line that ends it."""
    if heading not in lines:
        return None
    start = lines.index(heading) + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start:end]


def shown(lines: list[str], columns: Sequence[Column], cells: Sequence[str], keys: int = 1) -> str:
    """'table' or 'block': how the row shows whole, every figure next to its header or label."""
    if table_line(lines, cells):
        return "table"
    body = block(lines, " · ".join(c for c in cells[:keys] if c))
    assert body is not None, f"row {list(cells)} neither a table line nor a block:\n" + "\n".join(lines)
    for column, cell in zip(columns[keys:], cells[keys:], strict=True):
        pair = rf"(^|\s){re.escape(column.name)}\s+{re.escape(cell)}(\s|$)"
        assert not cell or any(re.search(pair, ln) for ln in body), f"{column.name} {cell!r}:\n" + "\n".join(
            body
        )
    return "block"


# --- herd report ---------------------------------------------------------------------------------


@pytest.fixture
def named_job(db: psycopg.Connection) -> build.Report:
    hand_job(db)
    rename_models(db, {"small": SMALL, "large": LARGE})
    return build.build(db, "hand")


def report_forms(lines: list[str], report: build.Report, names: tuple[str, ...]) -> set[str]:
    return {shown(lines, render.columns(names), render.cells(row, names)) for row in report.rows}


def test_report_compact_table_fits_80_columns(named_job: build.Report) -> None:
    lines = rendered(lambda c: render.render_table(named_job, c))
    policies = [r.policy for r in named_job.rows]
    assert policies == [SMALL, LARGE, "cascade", f"{SMALL}-only"]
    assert_readable(lines, policies)
    assert report_forms(lines, named_job, render.COMPACT_COLUMNS) == {"table"}


def test_report_wide_at_80_columns_prints_a_block_per_policy(named_job: build.Report) -> None:
    lines = rendered(lambda c: render.render_table(named_job, c, wide=True))
    assert_readable(lines, [r.policy for r in named_job.rows])
    assert report_forms(lines, named_job, render.WIDE_COLUMNS) == {"block"}


def test_report_wide_is_a_table_where_it_fits(named_job: build.Report) -> None:
    lines = rendered(lambda c: render.render_table(named_job, c, wide=True), width=160)
    assert_readable(lines, [r.policy for r in named_job.rows], width=160)
    assert report_forms(lines, named_job, render.WIDE_COLUMNS) == {"table"}


def test_a_table_that_does_not_fit_never_folds() -> None:
    columns = [Column("task", numeric=False), Column("model", numeric=False), Column("n", "answers")]
    rows = [["sentiment", "a" * 50, "12"], ["", "b" * 50, "3"], ["capitals", "c" * 50, "7"]]
    # 64 columns: the table needs 75, a block's heading 62.
    lines = rendered(lambda c: print_table(c, columns, rows, key_columns=2), width=64)
    assert_readable(lines, ["a" * 50, "b" * 50, "c" * 50], width=64)
    # An empty key cell means "as the row above", so the second block is headed by sentiment too.
    assert [ln for ln in lines if "·" in ln] == [
        f"sentiment · {'a' * 50}",
        f"sentiment · {'b' * 50}",
        f"capitals · {'c' * 50}",
    ]
    assert [shown(lines, columns, ["sentiment" if not r[0] else r[0], *r[1:]], 2) for r in rows] == [
        "block"
    ] * 3


# --- the demo's summary ----------------------------------------------------------------------------


def demo_ledger(db: psycopg.Connection, small: str, large: str) -> None:
    """The demo's two jobs: 12 prompts each, every third escalated, 3 of small's answers wrong."""
    for task, (right, wrong) in {
        "sentiment": ("positive", "negative"),
        "capitals": ("Paris", "Tokyo"),
    }.items():
        job = add_job(db, demo.job_name(task), entry=small, task=task)
        for i in range(12):
            prompt = add_prompt(db, job, f"{task}-{i}", model=small)
            db.execute("UPDATE prompts SET reference = %s WHERE id = %s", (right, prompt))
            first = add_attempt(db, prompt, small, i, i + 0.5, escalated=i % 3 == 0)
            db.execute(
                "UPDATE attempts SET answer = %s WHERE id = %s", (wrong if i % 4 == 0 else right, first)
            )
            if i % 3 == 0:
                final = add_attempt(db, prompt, large, i + 1, i + 2, endpoint="http://large")
                db.execute("UPDATE attempts SET answer = %s WHERE id = %s", (right, final))
                add_final(db, prompt, final, large)
            else:
                add_final(db, prompt, first, small)
    # Token counts of a long run: 24 x 123456 = 2962944 in.
    db.execute("UPDATE attempts SET prompt_tokens = 123456, generated_tokens = 6789")


@pytest.mark.parametrize(("small", "large", "form"), [("smollm2", "gemma3", "table"), (SMALL, LARGE, None)])
def test_demo_summary_at_80_columns(db: psycopg.Connection, small: str, large: str, form: str | None) -> None:
    demo_ledger(db, small, large)
    jobs = {demo.job_name(task): task for task in demo.JOBS}
    lines = rendered(lambda c: print_summary(db, jobs, c))
    assert_readable(lines, [small, large, "2962944/162936"])
    forms = {
        shown(lines, PER_MODEL, [small, "24", "8 (33%)", "16", "0.50s", "2962944/162936"]),
        shown(lines, PER_MODEL, [large, "8", "0 (0%)", "8", "1.00s", "987648/54312"]),
    }
    # The demo's own model names fit as tables; names as long as a hub's may print as blocks.
    assert form is None or forms == {form}


# --- the CLI with COLUMNS=80 -------------------------------------------------------------------------


def cli(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    env = herd_env(services, None, COLUMNS="80")
    return subprocess.run(
        [sys.executable, "-m", "herd", *args], env=env, cwd=services.home, capture_output=True, text=True
    )


def test_cli_at_columns_80(db: psycopg.Connection, named_job: build.Report, services: Services) -> None:
    for args, form in ((("report", "hand"), "table"), (("report", "hand", "--wide"), "block")):
        done = cli(services, *args)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        print("\n".join(lines))  # with -s: what a person sees at 80 columns
        assert_readable(lines, [r.policy for r in named_job.rows])
        names = render.WIDE_COLUMNS if "--wide" in args else render.COMPACT_COLUMNS
        assert report_forms(lines, named_job, names) == {form}
    done = cli(services, "status", "hand")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert_readable(lines, [SMALL, LARGE])
    # small: 5 attempts (answer x3, critique, refine), 1 escalated, 2 finals, latencies 3+2+1+1+2.
    # With a 21-character model name the 7 columns need 85: one block per model.
    assert shown(lines, STATUS_COLUMNS, [SMALL, "5", "0", "1 (20.0%)", "2", "1.800s", "50/25"]) == "block"
    # With names like the example herd's (llama-8b, mixtral, llama-70b) it is a table.
    rename_models(db, {SMALL: "llama-8b", LARGE: "llama-70b"})
    lines = cli(services, "status", "hand").stdout.splitlines()
    assert_readable(lines, ["llama-8b", "llama-70b"])
    assert (
        shown(lines, STATUS_COLUMNS, ["llama-8b", "5", "0", "1 (20.0%)", "2", "1.800s", "50/25"]) == "table"
    )

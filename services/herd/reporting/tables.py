"""Terminal tables that stay readable at any width: a table when it fits, else one block per row.

Rich fits a table that is too wide by folding every cell, so at 80 columns a 13-column table turns
into slivers ("smo / ll"). Instead: if the table fits the console at its natural width it prints
as a table; if not, each row prints as a heading and `label value` pairs, which fit any width
and never break a name or a figure. A cell is never folded or truncated in either form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

# Room to measure a table's natural width, unconstrained by the console's.
_UNBOUNDED = 100_000


@dataclass(frozen=True)
class Column:
    header: str  # short, for the table's header
    label: str = ""  # long, for the blocks; the header when empty
    numeric: bool = True  # right-justified in the table

    @property
    def name(self) -> str:
        return self.label or self.header


def build_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, title: str | None = None
) -> Table:
    table = Table(title=title)
    for column in columns:
        # no_wrap: print_table only prints the table when every cell fits whole.
        table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a '[' in a model name is not markup
    return table


def fits(console: Console, table: Table) -> bool:
    natural = console.measure(table, options=console.options.update_width(_UNBOUNDED)).maximum
    return natural <= console.width


def print_table(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    key_columns: int = 1,
) -> None:
    """`rows` as a table if it fits `console`, else one block per row.

    The first `key_columns` cells name a row (its block's heading). An empty key cell means "as the
    row above", as tables conventionally show groups; an empty figure is left out of the block.
    """
    table = build_table(columns, rows, title=title)
    if fits(console, table):
        console.print(table)
        return
    if title:
        console.print(Text(title, style="italic"), justify="center")
    blocks: list[tuple[str, list[tuple[str, str]]]] = []
    keys = [""] * key_columns
    for row in rows:
        keys = [cell or keys[i] for i, cell in enumerate(row[:key_columns])]
        pairs = [
            (c.name, cell) for c, cell in zip(columns[key_columns:], row[key_columns:], strict=True) if cell
        ]
        blocks.append((" · ".join(k for k in keys if k), pairs))
    # One layout for every block, so the same figure sits in the same place in each.
    label_width = max((cell_len(label) for _, pairs in blocks for label, _ in pairs), default=0)
    value_width = max((cell_len(value) for _, pairs in blocks for _, value in pairs), default=0)
    # As many pairs per line as fit (2 for the padding around the value, 2 for the gap); 1 to 3.
    per_line = max(1, min(3, (console.width - 2) // (label_width + value_width + 4)))
    for heading, pairs in blocks:
        console.print(_block(heading, pairs, per_line, label_width, value_width))


def _block(
    heading: str, pairs: list[tuple[str, str]], per_line: int, label_width: int, value_width: int
) -> Group:
    grid = Table.grid(padding=(0, 1))
    for i in range(per_line):
        if i:
            grid.add_column(width=1)  # a gap between pairs
        grid.add_column(style="dim", no_wrap=True, min_width=label_width)
        grid.add_column(justify="right", no_wrap=True, min_width=value_width)
    for start in range(0, len(pairs), per_line):
        line = pairs[start : start + per_line]
        cells: list[Text] = []
        for i, (label, value) in enumerate(line + [("", "")] * (per_line - len(line))):
            cells += [Text(""), Text(label), Text(value)] if i else [Text(label), Text(value)]
        grid.add_row(*cells)
    return Group(Text(heading, style="bold"), Padding(grid, (0, 0, 0, 2), expand=False), Text(""))

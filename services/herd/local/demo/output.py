"""Prose lines of the demo, wrapped by hand so they stay readable at 80 columns."""

from __future__ import annotations

import textwrap

from rich.console import Console


def say(console: Console, line: str) -> None:
    """Print `line` wrapped to the console; an indented line's continuations sit two columns deeper,
    so an indented block stays a block (rich's own wrap starts every continuation at column 0)."""
    lead = len(line) - len(line.lstrip())
    indent = " " * (lead + 2 if lead else 0)
    for part in textwrap.wrap(line, console.width, subsequent_indent=indent, break_on_hyphens=False) or [""]:
        console.print(part, highlight=False, markup=False, soft_wrap=True)

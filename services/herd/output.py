"""The one progress bar style of the CLI: `verb ━━━━ n/total unit 0:01:23`."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from herd.redact import mask_url

# Standard output for results (tables, policy text) that scripts and pipes read: never wrapped at the
# terminal's width, never coloured by guesswork. Messages and progress go to app.console (stderr).
out = Console(soft_wrap=True, highlight=False)


def counting_bar(console: Console, verb: str, unit: str, *, transient: bool = True) -> Progress:
    """A bar counting `unit`s; transient ones vanish when done, leaving only the summary on screen."""
    return Progress(
        TextColumn(verb),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
        # Not on a terminal (a pipe, a log file, CI) a bar is noise: rich would still print an empty
        # line where it stood, before the summary.
        disable=not console.is_terminal,
    )


def masked(url: str) -> str:
    """The URL without its password, for output that may end up in a terminal log."""
    return mask_url(url)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 document`, `2 documents` (plural: noun + "s" unless given)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"

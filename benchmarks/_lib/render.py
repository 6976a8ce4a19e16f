"""How benchmarks print figures: aligned tables, CPU lines and the state of the machine they ran on.

Functions here return text; the entry modules print it.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence

from benchmarks._lib.cpu import CpuUsage, load_average


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, indent: str = "") -> str:
    """Columns as wide as their widest cell; the first column left-aligned, the others right-aligned
    (numbers). Cells are printed with str(): format numbers before passing them."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first, rest = row[0].ljust(widths[0]), [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return (indent + "  ".join([first, *rest])).rstrip()

    return "\n".join(line(row) for row in cells)


def rate(x: float) -> str:
    """A per-second rate: 9876 -> '9876', 12345 -> '12.3k'."""
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:.0f}"


def cpu_line(cpu: CpuUsage) -> str:
    """'  cpu over 5.2s: worker 4.1s (79% of a core), ..., machine 93% busy of 2 cores'."""
    parts = [f"{name} {sec:.1f}s ({sec / cpu.wall_s:.0%} of a core)" for name, sec in cpu.seconds.items()]
    parts.append(f"machine {cpu.machine_busy:.0%} busy of {cpu.cores} cores")
    return f"  cpu over {cpu.wall_s:.1f}s: " + ", ".join(parts)


def machine_state() -> str:
    """What a figure needs beside it to be read: cores, load, Python; the machine is shared."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"cores={cores} load average={load_average():.2f} python={sys.version.split()[0]} "
        f"({platform.machine()}, {platform.system()})"
    )

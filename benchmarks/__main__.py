"""`python -m benchmarks`: every benchmark's name and what it measures, without importing them."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

HERE = Path(__file__).parent


def entries() -> dict[str, str]:
    """Benchmark name -> the first paragraph of its docstring, for every entry module (not `_lib`)."""
    out = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        out[path.stem] = " ".join(doc.split("\n\n")[0].split())
    return out


def main() -> int:
    print("Run one from the repository root: python -m benchmarks.<name> [--help]\n")
    found = entries()
    width = max(map(len, found))
    for name, summary in found.items():
        print(f"  {name:<{width}}  {summary}")
    print("\nCommands, what each measures and the latest figures: docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

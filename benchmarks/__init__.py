"""Herd's benchmarks. Each module here is one, run from the repository root:

    python -m benchmarks.<name> [--help]
    python -m benchmarks            # lists them

Each measures what its docstring says and prints figures beside a baseline measured in the same run,
never asserting on speed. docs/benchmarks.md has every command, what it measures and the latest
figures with the date and the machine's state. Code they share is in `_lib/`; services, herd files
and processes come from the tests' own harness (tests/support/harness.py).
"""

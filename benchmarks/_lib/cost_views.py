"""Switch the ledger's `attempt_costs` between today's definition and 0009's, for a same-run baseline.

Both have the same columns and numbers (tests/unit/test_cost_shares.py); 0009's runs the open tail's
shares inside whatever join the planner picks, and its carried parts once per joined row
(migrations/herd_migrations/versions/0016_tail_shares_once.py). The services are throwaway
(benchmarks/_lib/entry.py); a run restores today's view before it ends.
"""

from __future__ import annotations

import importlib

import psycopg

_V16 = importlib.import_module("herd_migrations.versions.0016_tail_shares_once")
DEFINITIONS = {"old": _V16.PREVIOUS["attempt_costs"], "new": _V16.ATTEMPT_COSTS}


def attempt_costs_view(conn: psycopg.Connection, which: str) -> None:
    """Make `attempt_costs` 0009's (`old`) or today's (`new`) definition."""
    conn.execute(f"CREATE OR REPLACE VIEW attempt_costs AS {DEFINITIONS[which]}")  # type: ignore[arg-type]

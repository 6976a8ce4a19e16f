"""The cost views as they were before stored shares (revisions 0004 and 0006), in their own schema.

Tests and benchmarks/ledger_bench.py compare the public views against these: same attempts, same
numbers, the old way (a sweep of the whole ledger per query).
"""

from __future__ import annotations

import importlib

import psycopg

_V4 = importlib.import_module("herd_migrations.versions.0004_busy_seconds")
_V6 = importlib.import_module("herd_migrations.versions.0006_policies_budgets")


def create_sweep_views(conn: psycopg.Connection, schema: str = "sweep") -> None:
    """(Re)create every cost view of 0004 and 0006 in `schema`, reading the public tables."""
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.execute(f"CREATE SCHEMA {schema}")
    # Unqualified view names resolve to the schema's own views (created first), tables to public.
    conn.execute(f"SET search_path = {schema}, public")
    try:
        for name, query in [*_V4.VIEWS, *_V6.VIEWS]:
            conn.execute(f"CREATE VIEW {schema}.{name} AS {query}")
    finally:
        conn.execute("SET search_path = public")

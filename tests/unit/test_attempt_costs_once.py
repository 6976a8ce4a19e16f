"""attempt_costs (migration 0016) computes the open tail's shares once per query, whatever the plan.

A job that has just landed has no planner statistics yet, and the planner may misjudge a job's
attempts as one row and join the tail's shares by nested loop. 0009's view then re-ran the carried
parts' subquery for every row of that join (a 1,500-prompt calibration job took 45 s per query;
benchmarks/nine_models.py). Nested loops are forced here to stand for that misjudgment.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from benchmarks._lib import many_models
from herd.herdfile.model import load_herd
from herd.policy import calibration

_V16 = importlib.import_module("herd_migrations.versions.0016_tail_shares_once")


def tail_loops(db: psycopg.Connection, job_id: int) -> int:
    """The most times any plan node reading cost_share_carry or the tail's shares (CTE tail_shares)
    ran in one job's attempt_costs query, with nested loops forced (hash and merge joins off)."""
    with db.transaction():
        db.execute("SET LOCAL enable_hashjoin = off")
        db.execute("SET LOCAL enable_mergejoin = off")
        row = db.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT attempt_id, cost_usd FROM attempt_costs WHERE job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    tail = [
        n["Actual Loops"]
        for n in nodes(row[0][0]["Plan"])
        if n.get("Relation Name") == "cost_share_carry" or n.get("CTE Name") == "tail_shares"
    ]
    assert tail, "the plan reads cost_share_carry"
    return max(tail)


@pytest.fixture
def ledger(db: psycopg.Connection) -> psycopg.Connection:
    many_models.load(db, many_models.Herd.of(3), 120)
    return db


def job_id(db: psycopg.Connection, name: str) -> int:
    row = db.execute("SELECT id FROM jobs WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_the_tail_is_read_once_per_query(ledger: psycopg.Connection) -> None:
    assert tail_loops(ledger, job_id(ledger, "cal")) == 1


def test_the_previous_view_read_them_once_per_joined_row(ledger: psycopg.Connection) -> None:
    """The witness that the test above can fail: 0009's view, same rows, same forced plan."""
    new = ledger.execute("SELECT attempt_id, cost_usd FROM attempt_costs ORDER BY 1").fetchall()
    ledger.execute(f"CREATE OR REPLACE VIEW attempt_costs AS {_V16.PREVIOUS['attempt_costs']}")
    try:
        assert tail_loops(ledger, job_id(ledger, "cal")) > 360  # 120 prompts x 3 models at least
        assert ledger.execute("SELECT attempt_id, cost_usd FROM attempt_costs ORDER BY 1").fetchall() == new
    finally:
        ledger.execute(f"CREATE OR REPLACE VIEW attempt_costs AS {_V16.ATTEMPT_COSTS}")


def test_the_benchmark_ledger_is_a_full_calibration_job_and_a_cascade(
    ledger: psycopg.Connection, tmp_path: Path
) -> None:
    """benchmarks/_lib/many_models.py writes what workers would: every model answers every calibration
    prompt, with a positive cost; the live job has one final per prompt, after its escalations."""
    (tmp_path / "herd.yaml").write_text(many_models.Herd.of(3).yaml(), encoding="utf-8")
    herd = load_herd(tmp_path / "herd.yaml")
    loaded = calibration.load(ledger, herd, "cal", "qa", many_models.SCORER)
    assert (loaded.data.n, loaded.route, loaded.left_out) == (120, ["m0", "m1", "m2"], 0)
    for model in loaded.route:
        assert (loaded.data.plain[model].cost_usd > 0).all()
    quality = [loaded.data.plain[m].score.mean() for m in loaded.route]
    assert quality == sorted(quality) and quality[0] < quality[-1]  # stronger models, better answers
    live = job_id(ledger, "live")
    finals, prompts, escalated = ledger.execute(
        """SELECT (SELECT count(*) FROM finals f JOIN prompts p ON p.id = f.prompt_id WHERE p.job_id = %(j)s),
                  (SELECT count(*) FROM prompts WHERE job_id = %(j)s),
                  (SELECT count(*) FROM attempts a JOIN prompts p ON p.id = a.prompt_id
                   WHERE p.job_id = %(j)s AND a.escalated)""",
        {"j": live},
    ).fetchone() or (0, 0, 0)
    assert finals == prompts == 120 and escalated > 0

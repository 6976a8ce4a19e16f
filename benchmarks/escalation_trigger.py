"""What the share sync trigger on `attempts` costs an escalation, 0017's (every UPDATE) against 0018's
(only a changed prompt, model, GPU count or price), in one run.

    python -m benchmarks.escalation_trigger [--n 1000] [--blocks 4] [--ledger 50000] [--reprice 5000]

Prints figures only. Services from HERD_DATABASE_URL when set (it must name a scratch database: its
ledger is truncated and its schema moved between revisions 0017 and 0018), else an embedded Postgres
under a temporary HERD_HOME (tests/support/harness.py). Postgres must run on this machine (its
backend's CPU is read).

Method: benchmarks.attempt_triggers' ledger (`--ledger` synthetic attempts, every share stored, queued
prompts to attach new attempts to). Then `--blocks` rounds, alternating the schema between revision
0018 and 0017 (alembic downgrade/upgrade, the migrations' own SQL): `--n` single-row INSERTs (the real
insert_attempt), then `--n` real `mark_escalated` UPDATEs of them, as a worker's steps do, with
synchronous_commit off (the statement's own cost, not the WAL flush's), then the same attempts'
UPDATE once more each inside one plpgsql loop (no round trips: the statement and its triggers). Per
revision, the median over blocks of the client's wall time and the backend's CPU per
`mark_escalated`, and of the loop's time per UPDATE. Then the other side of
0018's triggers: one UPDATE repricing `--reprice` attempts that have stored shares, once under each
revision (0017: one UPDATE of their shares from the transition table; 0018: a row noted per attempt,
then one UPDATE of their shares), each checked to have synced every share.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import psycopg
from alembic import command

from benchmarks._lib.cpu import load_average
from benchmarks._lib.entry import run
from benchmarks.attempt_triggers import Block, block, one, parser, prepared
from herd.ledger.db import alembic_config

REVISIONS = ("0018", "0017")
REPRICE = "UPDATE attempts SET usd_per_gpu_hour = usd_per_gpu_hour + 0.01 WHERE id = ANY(%s)"
# Shares whose cost is 0003's expression of their attempt's (new) price: every repriced one, or a
# trigger missed some.
SYNCED = """
SELECT count(*) FROM cost_shares s JOIN attempts a ON a.id = s.attempt_id
WHERE s.attempt_id = ANY(%s) AND s.cost_usd = s.shared_s * a.gpu_count * a.usd_per_gpu_hour / 3600
"""


@dataclass(frozen=True)
class Figures:
    escalation: dict[str, Block]  # revision -> medians per statement over blocks (seconds)
    inside: dict[str, float]  # revision -> median seconds per escalation UPDATE looped inside Postgres
    reprice: dict[str, float]  # revision -> seconds for the one repricing UPDATE, triggers included
    synced: dict[str, int]  # revision -> shares whose cost_usd matched the new price afterwards


def at_revision(url: str, revision: str) -> None:
    """Move the schema to `revision` (one of REVISIONS, or "head") with the migrations' own SQL."""
    config = alembic_config(url)
    if revision == "0017":
        command.downgrade(config, "0017")
    else:
        command.upgrade(config, revision)


# The same single-row UPDATE as mark_escalated, each its own statement (so each fires the statement
# triggers), looped inside Postgres: its seconds for all of `ids`, without the client's round trips.
ESCALATE_EACH = """
CREATE FUNCTION pg_temp.escalate_each(ids bigint[]) RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    x bigint;
BEGIN
    FOREACH x IN ARRAY ids LOOP
        UPDATE attempts SET escalated = true WHERE id = x;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0);
END
$$
"""


def escalations(
    url: str, conn: psycopg.Connection, prompt_ids: list[int], n: int, blocks: int
) -> tuple[dict[str, Block], dict[str, float]]:
    """Per revision, medians over blocks: the client's Block (insert_attempt, mark_escalated), and the
    seconds per UPDATE of the same attempts escalated again inside Postgres (ESCALATE_EACH)."""
    backend = one(conn, "SELECT pg_backend_pid()")
    conn.execute("SET synchronous_commit = off")
    conn.execute(ESCALATE_EACH)
    results: dict[str, list[Block]] = {}
    inside: dict[str, list[float]] = {}
    at = 0
    for _ in range(blocks):
        for revision in REVISIONS:
            at_revision(url, revision)
            chunk = prompt_ids[at : at + n]
            results.setdefault(revision, []).append(block(conn, backend, chunk))
            ids = [r[0] for r in conn.execute("SELECT id FROM attempts WHERE prompt_id = ANY(%s)", (chunk,))]
            row = conn.execute("SELECT pg_temp.escalate_each(%s)", (ids,)).fetchone()
            inside.setdefault(revision, []).append(float(row[0]) / len(ids) if row else 0.0)
            at += n
    medians = {
        revision: Block(
            statistics.median(b.insert_wall for b in v),
            statistics.median(b.insert_cpu for b in v),
            statistics.median(b.update_wall for b in v),
            statistics.median(b.update_cpu for b in v),
        )
        for revision, v in results.items()
    }
    return medians, {revision: statistics.median(v) for revision, v in inside.items()}


def reprice(url: str, conn: psycopg.Connection, count: int) -> tuple[dict[str, float], dict[str, int]]:
    """One UPDATE of `count` shared attempts' price under each revision: its seconds, and how many of
    their shares carry the new price afterwards (all of them, or a trigger missed some)."""
    ids = [r[0] for r in conn.execute("SELECT attempt_id FROM cost_shares ORDER BY 1 LIMIT %s", (count,))]
    seconds: dict[str, float] = {}
    synced: dict[str, int] = {}
    for revision in REVISIONS:
        at_revision(url, revision)
        t0 = time.perf_counter()
        conn.execute(REPRICE, (ids,))
        seconds[revision] = time.perf_counter() - t0
        row = conn.execute(SYNCED, (ids,)).fetchone()
        synced[revision] = int(row[0]) if row else 0
    at_revision(url, "head")
    return seconds, synced


def lines(f: Figures, n: int) -> list[str]:
    new, old = f.escalation["0018"], f.escalation["0017"]
    out = [
        f"mark_escalated (one UPDATE of one fresh attempt, median of blocks of {n}, synchronous_commit off):",
        f"  0017 (statement trigger, every UPDATE): wall {old.update_wall * 1e6:7.0f} us, "
        f"backend CPU {old.update_cpu * 1e6:6.0f} us",
        f"  0018 (UPDATE OF the synced columns only): wall {new.update_wall * 1e6:7.0f} us, "
        f"backend CPU {new.update_cpu * 1e6:6.0f} us",
        f"  saved per escalation: wall {(old.update_wall - new.update_wall) * 1e6:.0f} us, "
        f"CPU {(old.update_cpu - new.update_cpu) * 1e6:.0f} us",
        f"the same UPDATE looped inside Postgres (no round trips), per UPDATE: "
        f"{f.inside['0017'] * 1e6:.0f} us (0017), {f.inside['0018'] * 1e6:.0f} us (0018)",
        f"insert_attempt (same blocks, unaffected by either): wall {old.insert_wall * 1e6:.0f} us (0017), "
        f"{new.insert_wall * 1e6:.0f} us (0018)",
    ]
    for revision in ("0017", "0018"):
        out.append(
            f"one UPDATE repricing shared attempts under {revision}: {f.reprice[revision]:.3f} s, "
            f"shares synced {f.synced[revision]}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser("escalation_trigger", __doc__, 1000, 50_000, "0018, 0017")
    p.add_argument("--reprice", type=int, default=5000, help="attempts repriced by one UPDATE")
    args = p.parse_args(argv)
    what = f"{args.blocks} x {args.n} escalations per revision"
    with prepared("herd-escalation-trigger-", args.ledger, args.n * args.blocks * 2, what) as (
        url,
        _,
        conn,
        prompt_ids,
    ):
        try:
            medians, inside = escalations(url, conn, prompt_ids, args.n, args.blocks)
            seconds, synced = reprice(url, conn, args.reprice)
        finally:
            at_revision(url, "head")
    print("\n".join(lines(Figures(medians, inside, seconds, synced), args.n)))
    print(f"load average after: {load_average():.2f}")
    return 0


if __name__ == "__main__":
    run(main)

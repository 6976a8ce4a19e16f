"""The fault-injection suite's short version (`python -m benchmarks.faults --short`, docs/reliability.md).

150 prompts through the 3-tier herd on doubles that inject 424s, 5xx, 429s, malformed bodies and hangs,
while workers are SIGKILLed, Redis and Postgres are SIGKILLed and restarted and the medium endpoint is
down for a while: nothing may be lost, no step recorded twice, every failure must say why, and the job
must drain soon after the last fault. It runs as a subprocess with its own embedded Postgres and Redis
(it kills them), so it shares nothing with the session's services.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.harness import REPO


def test_short_fault_suite_keeps_the_delivery_guarantees(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.faults", "--short", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    took = time.monotonic() - started
    report = f"exit {proc.returncode} after {took:.0f}s\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert out.exists(), report
    res = json.loads(out.read_text())
    plan, ledger = res["plan"], res["ledger"]

    assert res["drained"], f"not drained by the deadline; stuck: {res['stuck']}\n{report}"
    assert res["lost"] == 0, report
    assert ledger["duplicate_finals"] == 0, report
    assert ledger["duplicate_attempts"] == 0, report
    assert ledger["done_without_final"] == 0 and ledger["final_not_done"] == 0, report
    assert ledger["failed_without_reason"] == 0, report
    # The faults must have hit a job in progress, or the run proves nothing.
    kills = [ev for ev in res["events"] if ev["action"].startswith(("kill", "cut"))]
    partition = 1 if plan["partition_s"] and not res["skipped"] else 0
    assert len(kills) == 3 + plan["worker_kills"] + (2 if plan["empty_redis"] else 0) + partition, report
    assert res["goals"]["the empty Redis struck again at a due stale sweep"], report
    assert all((ev["open_prompts"] or 0) > 0 for ev in kills), report
    assert res["calls"]["calls_total"] >= plan["prompts"], report
    assert sum(sum(d.values()) - d.get("none", 0) for d in res["calls"]["faults_drawn"].values()) > 0
    # Goal: drained within one stale period of the last fault. A message lost at the last fault is
    # re-sent one stale period after its prompt was queued, at the pump's next tick, and its cascade may
    # still have up to three steps to run: that much slack, no more.
    slack = plan["pump_interval_s"] + 3 * plan["timeout_s"]
    assert res["drain_after_last_fault_s"] <= plan["stale_after_s"] + slack, report

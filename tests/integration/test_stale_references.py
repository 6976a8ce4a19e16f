"""Prompts queued at a model the herd file no longer defines, through a real worker: its start logs the
stale reference, and its pump's stale sweep fails them with that reason instead of re-sending them
to a queue no worker reads, every stale period, forever."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.harness import herd_yaml, wait_for

KEYS = [f"q{i:02d}" for i in range(6)]
GONE = "names model 'small', which the herd file does not define"


def test_a_worker_fails_prompts_queued_at_a_removed_model_with_the_reason(
    make_herd, db, double, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd(herd_yaml(double), HERD_PUMP_INTERVAL_S="0.5", HERD_STALE_AFTER_S="2")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": k, "text": f"question {k}"}) + "\n" for k in KEYS))
    herd.cli("submit", str(docs), "--job", "before", "--task", "qa")  # queued at `small`, no worker yet
    # The operator renames the entry model (a new checkpoint) and starts workers on the new herd file.
    herd.path.write_text(herd_yaml(double).replace("small", "tiny"))
    herd.start_worker("tiny")
    assert wait_for(db, "before", timeout=60) == {"failed": len(KEYS)}
    errors = {e for (e,) in db.execute("SELECT error FROM prompts").fetchall()}
    assert errors == {f"the prompt's step {GONE}"}
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (0,)  # no model was called
    log = next(tmp_path.glob("worker-tiny-*.log")).read_text()
    assert f"WARNING/MainProcess] job 'before': {len(KEYS)} queued prompts {GONE}" in log
    assert f"failing {len(KEYS)} queued prompt(s): the prompt's step {GONE}" in log
    status = herd.cli("status", "before").stdout
    assert f"{len(KEYS)} x the prompt's step {GONE}" in status

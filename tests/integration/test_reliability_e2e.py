"""End to end, with real workers, Redis, Postgres and the endpoint double: every prompt gets an
outcome with a reason, whatever the server sends or the database does, and the model is called once
per step."""

from __future__ import annotations

import time

from tests.integration.test_cascade import CONFIDENT, UNSURE, jsonl
from tests.support.harness import herd_yaml, wait_for


def calls_for(double, word: str, model: str | None = None) -> int:  # type: ignore[no-untyped-def]
    return sum(word in c["prompt"] and model in (None, c["model"]) for c in double.calls())


def prompt_rows(db) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    """doc_key -> (state, error), the error '' when there is none."""
    rows = db.execute("SELECT doc_key, state, coalesce(error, '') FROM prompts")
    return {key: (state, error) for key, state, error in rows}


def test_malformed_logprobs_fail_the_prompt_with_a_reason_and_one_call(
    make_herd, db, double, tmp_path
) -> None:
    # vLLM sends "logprob": null for a NaN; Python servers a bare NaN. Before, the TypeError escaped the
    # task: nothing recorded, and every stale period the model was called again.
    double.script(
        [
            {"model": "small", "match": "nullchat", "text": "yes", "quirk": "null_logprob"},
            {"model": "small", "match": "nanchat", "text": "yes", "quirk": "nan_logprob"},
            {"model": "small", "match": "", "text": "unsure", "first": UNSURE},
            {"model": "medium", "match": "nulltgi", "text": "yes", "quirk": "null_logprob"},
            {"model": "medium", "match": "", "text": "unsure", "first": UNSURE},
            {"model": "large", "match": "nullcompl", "text": "yes", "quirk": "null_logprob"},
        ]
    )
    herd = make_herd(HERD_STALE_AFTER_S="2")
    names = ["nullchat", "nanchat", "nulltgi", "nullcompl"]
    docs = jsonl(tmp_path / "lp.jsonl", [{"id": n, "text": f"question {n}"} for n in names])
    for model in ("small", "medium", "large"):
        herd.start_worker(model)
    herd.cli("submit", str(docs), "--job", "lp", "--task", "qa")
    assert wait_for(db, "lp") == {"failed": 4}
    rows = prompt_rows(db)
    assert "small answer" in rows["nullchat"][1] and "without a usable logprob (null)" in rows["nullchat"][1]
    # The chat body is read as plain JSON now (no InferenceClient objects), where NaN is a float: the
    # same logprob check as null names it.
    assert "small answer" in rows["nanchat"][1] and "without a usable logprob (nan)" in rows["nanchat"][1]
    assert "medium answer" in rows["nulltgi"][1] and "logprob" in rows["nulltgi"][1]
    assert "large answer" in rows["nullcompl"][1] and "logprob" in rows["nullcompl"][1]
    time.sleep(4)  # two stale periods and pump ticks: nothing is sent again
    # Once per step: small answered the last two unsure, so they went on to the model that failed.
    calls = {n: calls_for(double, n) for n in names}
    assert calls == {"nullchat": 1, "nanchat": 1, "nulltgi": 2, "nullcompl": 3}
    assert db.execute("SELECT count(*) FROM attempts WHERE status = 'error'").fetchone() == (4,)


def test_an_exception_outside_every_rule_fails_the_step_instead_of_looping(
    make_herd, db, double, tmp_path
) -> None:
    # The herd file lost the job's task while prompts were queued: the step cannot even be looked up.
    double.script([], default={"text": "fine", "first": CONFIDENT})
    herd = make_herd(HERD_STALE_AFTER_S="2")
    docs = jsonl(tmp_path / "t.jsonl", [{"id": i, "text": f"q {i}"} for i in range(3)])
    herd.cli("submit", str(docs), "--job", "t", "--task", "qa")
    herd.path.write_text(herd.path.read_text().replace("  qa:\n", "  other:\n"))
    herd.start_worker("small")
    assert wait_for(db, "t") == {"failed": 3}
    assert all("internal error: KeyError('qa')" in error for _, error in prompt_rows(db).values())
    time.sleep(3)
    assert double.calls() == []
    assert db.execute("SELECT count(*) FROM attempts WHERE status = 'error'").fetchone() == (3,)


def test_dead_database_connections_are_replaced_not_stalled(make_herd, db, double, tmp_path) -> None:
    # After a Postgres restart or failover the pool holds dead connections. The prompts must finish
    # promptly, not after the stale period (here 10 minutes).
    double.script([], default={"text": "fine", "first": CONFIDENT})
    herd = make_herd(HERD_STALE_AFTER_S="600")
    herd.start_worker("small")
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "a.jsonl", [{"id": i, "text": f"a {i}"} for i in range(8)])),
        "--job",
        "a",
        "--task",
        "qa",
    )
    assert wait_for(db, "a") == {"done": 8}
    killed = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchone()
    assert killed is not None and killed[0] >= 1
    started = time.monotonic()
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "b.jsonl", [{"id": i, "text": f"b {i}"} for i in range(8)])),
        "--job",
        "b",
        "--task",
        "qa",
    )
    assert wait_for(db, "b", timeout=30) == {"done": 8}
    assert time.monotonic() - started < 30
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (16,)


def test_not_an_answer_is_never_kept_as_confident(make_herd, db, double, tmp_path) -> None:
    text = herd_yaml(double).replace(
        "    max_in_flight: 4\n", "    generation: {max_new_tokens: 3}\n    max_in_flight: 4\n"
    )
    long = "one two three four five six"
    double.script(
        [
            # A reasoning model cut off before its answer: content null, logprobs of the reasoning.
            {
                "model": "small",
                "match": "reasoning",
                "text": long,
                "first": CONFIDENT,
                "quirk": "null_content",
            },
            {"model": "small", "match": "cut", "text": long, "first": CONFIDENT},
            {"model": "small", "match": "whole", "text": "short answer", "first": CONFIDENT},
            {"model": "medium", "match": "cut", "text": long, "first": CONFIDENT},  # TGI: "length" too
            {"model": "large", "match": "cut", "text": "the large answer", "first": CONFIDENT},
        ]
    )
    herd = make_herd(text)
    for model in ("small", "medium", "large"):
        herd.start_worker(model)
    docs = jsonl(tmp_path / "n.jsonl", [{"id": k, "text": f"q {k}"} for k in ("reasoning", "cut", "whole")])
    herd.cli("submit", str(docs), "--job", "n", "--task", "qa")
    assert wait_for(db, "n") == {"failed": 1, "done": 2}
    rows = prompt_rows(db)
    assert rows["reasoning"] == (
        "failed",
        "small answer: empty answer (cut off at max_new_tokens=3), finish_reason=length",
    )
    finals = dict(
        db.execute(
            "SELECT p.doc_key, f.model || ':' || f.answer FROM finals f JOIN prompts p ON p.id = f.prompt_id"
        )
    )
    assert finals == {"cut": "large:the large answer", "whole": "small:short answer"}
    path = db.execute(
        """SELECT a.model, a.escalated, a.finish_reason FROM attempts a JOIN prompts p ON p.id = a.prompt_id
           WHERE p.doc_key = 'cut' ORDER BY a.id"""
    ).fetchall()
    assert path == [("small", True, "length"), ("medium", True, "length"), ("large", False, "stop")]


def test_tgi_424_is_retried_and_stop_sequences_leave_every_protocol_alike(
    make_herd, db, double, tmp_path
) -> None:
    text = herd_yaml(double).replace(
        "    max_in_flight: 4\n", '    generation: {stop: ["\\nQ:"]}\n    max_in_flight: 4\n'
    )
    answer = " Paris\nQ: and Spain?\nA: Madrid"
    double.script(
        [
            {"model": "small", "match": "", "text": "unsure", "first": UNSURE},
            # TGI's shard failed mid-generation (CUDA out of memory): 424, then fine.
            {"model": "medium", "match": "oom", "text": answer, "first": CONFIDENT, "errors": [424]},
            {"model": "medium", "match": "", "text": "unsure", "first": UNSURE},
            {"model": "large", "match": "", "text": answer, "first": CONFIDENT},
        ]
    )
    herd = make_herd(text)
    for model in ("small", "medium", "large"):
        herd.start_worker(model)
    docs = jsonl(
        tmp_path / "s.jsonl", [{"id": "oom", "text": "oom France?"}, {"id": "oai", "text": "France?"}]
    )
    herd.cli("submit", str(docs), "--job", "s", "--task", "qa")
    assert wait_for(db, "s") == {"done": 2}
    finals = dict(
        db.execute(
            "SELECT p.doc_key, f.model || ':' || f.answer FROM finals f JOIN prompts p ON p.id = f.prompt_id"
        )
    )
    assert finals == {"oom": "medium:Paris", "oai": "large:Paris"}
    assert calls_for(double, "oom", "medium") == 2
    retried = db.execute(
        "SELECT a.retries FROM attempts a JOIN prompts p ON p.id = a.prompt_id "
        "WHERE p.doc_key = 'oom' AND a.model = 'medium'"
    ).fetchone()
    assert retried == (1,)

"""tests/support/faulty.py: seeded fault draws at the configured rates, each fault on the real routes."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import httpx
import pytest

from tests.support.faulty import FAULT_KINDS, MALFORMED, Faults, FaultyDouble

RATES = {"status424": 0.05, "status5xx": 0.05, "status429": 0.03, "malformed": 0.02, "hang": 0.02}
CHAT = {"messages": [{"role": "user", "content": "q00001 hello"}], "logprobs": True, "top_logprobs": 2}
TGI = {"inputs": "q00001 hello", "parameters": {"details": True, "top_n_tokens": 2}}
COMPLETIONS = {"prompt": "q00001 hello", "logprobs": 2}


def test_draws_are_reproducible_and_at_the_configured_rates() -> None:
    faults = Faults(**RATES, seed=7)
    drawn = collections.Counter(faults.draw("m", f"prompt {i}", 1)[0] for i in range(40_000))
    for kind in FAULT_KINDS:
        assert drawn[kind] / 40_000 == pytest.approx(RATES[kind], abs=0.006)
    assert [faults.draw("m", "p", n)[0] for n in range(50)] == [
        faults.draw("m", "p", n)[0] for n in range(50)
    ]
    with pytest.raises(ValueError, match="unknown fault keys"):
        Faults.coerce({"status_424": 0.1})
    with pytest.raises(ValueError, match="sum to <= 1"):
        Faults(status424=0.6, status5xx=0.6)


@pytest.mark.parametrize(("kind", "status"), [("status424", 424), ("status429", 429), ("status5xx", None)])
def test_status_faults_on_every_route(tmp_path: Path, kind: str, status: int | None) -> None:
    log = tmp_path / "calls.jsonl"
    with FaultyDouble(faults={kind: 1.0}, call_log=log) as double:
        base = double.model_url("m")
        for path, body in (
            ("/generate", TGI),
            ("/v1/chat/completions", CHAT),
            ("/v1/completions", COMPLETIONS),
        ):
            r = httpx.post(base + path, json=body)
            assert r.status_code == status if status else 500 <= r.status_code <= 503
            assert "error" in r.json()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["fault"] for c in lines] == [kind] * 3
    assert [c["protocol"] for c in lines] == ["tgi", "chat", "completions"]


def test_malformed_bodies_break_the_protocol(tmp_path: Path) -> None:
    seen: dict[str, set[str]] = collections.defaultdict(set)
    with FaultyDouble(faults={"malformed": 1.0}, call_log=tmp_path / "calls.jsonl") as double:
        base = double.model_url("m")
        for i in range(60):  # each call draws its variant
            for path, body in (("/generate", TGI), ("/v1/chat/completions", CHAT)):
                body = json.loads(json.dumps(body).replace("q00001", f"q{i:05d}"))
                r = httpx.post(base + path, json=body)
                assert r.status_code == 200
                fault = double.calls()[-1]["fault"]
                variant = fault.split(":", 1)[1]
                seen[path].add(variant)
                if variant in ("truncated", "html"):
                    with pytest.raises(ValueError):
                        json.loads(r.text)
                elif variant == "no_answer":
                    assert (
                        "generated_text" not in r.json() if path == "/generate" else not r.json()["choices"]
                    )
                else:
                    data = r.json()
                    tokens = (
                        data["details"]["tokens"]
                        if path == "/generate"
                        else data["choices"][0]["logprobs"]["content"]
                    )
                    assert tokens and all(t["logprob"] is None for t in tokens)
    assert seen["/generate"] == set(MALFORMED) and seen["/v1/chat/completions"] == set(MALFORMED)


def test_a_hang_outlasts_the_client_timeout_and_is_logged_on_arrival(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    with FaultyDouble(faults={"hang": 1.0, "hang_s": 1.0}, call_log=log) as double:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(double.model_url("m") + "/v1/chat/completions", json=CHAT, timeout=0.2)
        assert [c["fault"] for c in double.calls()] == ["hang"]  # logged before the answer
    assert json.loads(log.read_text())["fault"] == "hang"


def test_no_fault_is_the_plain_double() -> None:
    with FaultyDouble(faults={}) as double:
        double.script([{"text": "plain answer"}])
        r = httpx.post(double.model_url("m") + "/generate", json=TGI)
        assert r.status_code == 200 and r.json()["generated_text"] == "plain answer"
        assert double.calls()[-1]["fault"] is None

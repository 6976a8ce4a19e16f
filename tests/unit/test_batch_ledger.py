"""OpenAI batch files through the ledger, in process: `submit_batch` (all or nothing, every bad line
named), the cascade on chat requests (real backends on the endpoint double, real Postgres, no Celery),
and the output and error lines read back with the OpenAI SDK's types and vLLM's parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from herd.backends.registry import make_backends
from herd.batch import export
from herd.batch.submit import BatchInvalidError, Source, submit_batch
from herd.cascade.pipeline import Pipeline
from herd.cascade.requests import REQUEST
from herd.herdfile.model import HerdConfig, load_herd
from herd.input_errors import InputError
from herd.policy.active import ActivePolicies
from herd.quality.audit import Audit, audit_job_name, audited
from tests.support.cascade import connector, drive
from tests.support.endpoint import EndpointDouble
from tests.support.harness import Services, chat_herd_yaml
from tests.support.vllm_batch import BatchRequestInput, BatchRequestOutput

SURE, UNSURE = {"first": [0.95, 0.01]}, {"first": [0.55, 0.45]}


def request(
    custom_id: str, content: str, model: str = "herd", url: str = "/v1/chat/completions", **body: Any
) -> dict[str, Any]:
    if url == "/v1/completions":
        payload: dict[str, Any] = {"model": model, "prompt": content, **body}
    else:
        payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def jsonl(*items: dict[str, Any] | str) -> bytes:
    return b"".join((json.dumps(i) if isinstance(i, dict) else i).encode() + b"\n" for i in items)


@pytest.fixture
def herd(tmp_path: Path, double: EndpointDouble) -> HerdConfig:
    path = tmp_path / "herd.yaml"
    path.write_text(chat_herd_yaml(double))
    return load_herd(path)


def store(services: Services, herd: HerdConfig, data: bytes, job: str = "b1", **kwargs: Any) -> Any:
    with psycopg.connect(services.database_url) as conn:
        return submit_batch(conn, herd, job=job, sources=[Source("in.jsonl", [data])], window=100, **kwargs)


def run(services: Services, herd: HerdConfig, dispatched: list[Any]) -> None:
    connect = connector(services.database_url)
    pipeline = Pipeline(herd, make_backends(herd), connect, ActivePolicies(connect, ttl_s=0.0), window=100)
    drive(pipeline, dispatched, connect)


def exported(services: Services, job: str = "b1") -> tuple[list[dict[str, Any]], list[dict[str, Any]], bytes]:
    with psycopg.connect(services.database_url) as conn, conn.transaction():
        raw = list(export.lines(conn, job))
    outputs = [json.loads(line) for error, line in raw if not error]
    errors = [json.loads(line) for error, line in raw if error]
    return outputs, errors, b"".join(line for _, line in raw)


def test_chat_requests_run_the_cascade_and_come_back_in_openais_shape(services, db, double, herd) -> None:  # type: ignore[no-untyped-def]
    double.script(
        [
            {"match": "hard", "model": "small", **UNSURE, "text": "Maybe."},
            {"match": "hard", "model": "medium", **SURE, "text": "Surely."},
        ],
        default={**SURE, "text": "Paris."},
    )
    data = jsonl(
        request("easy", "Capital of France?", temperature=0.2, top_p=0.9, seed=7, metadata={"t": "x"}),
        request("hard", "A hard one", logprobs=True, top_logprobs=2, max_tokens=9, seed=7),
        request("legacy", "Complete this", url="/v1/completions", logprobs=1),
    )
    result = store(services, herd, data)
    assert (result.read, result.added) == (3, 3)
    run(services, herd, result.dispatched)
    outputs, errors, _ = exported(services)
    assert errors == []
    by_id = {line["custom_id"]: line for line in outputs}
    assert list(by_id) == ["easy", "hard", "legacy"]  # submission order

    easy = ChatCompletion.model_validate(by_id["easy"]["response"]["body"])
    assert (easy.model, easy.choices[0].message.content, easy.choices[0].logprobs) == (
        "small",
        "Paris.",
        None,
    )
    assert easy.usage is not None and easy.usage.completion_tokens == 1 and easy.usage.prompt_tokens > 0
    assert by_id["easy"]["herd"]["models"] == ["small"] and by_id["easy"]["error"] is None

    hard = ChatCompletion.model_validate(by_id["hard"]["response"]["body"])
    assert (hard.model, hard.choices[0].message.content) == ("medium", "Surely.")
    assert (
        by_id["hard"]["herd"]["models"] == ["small", "medium"] and by_id["hard"]["herd"]["escalations"] == 1
    )
    content = hard.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and [t.token for t in content] == ["Surely."]
    assert all(len(t.top_logprobs) == 2 for t in content)  # the caller's 2, not Herd's 5

    legacy = Completion.model_validate(by_id["legacy"]["response"]["body"])
    assert legacy.object == "text_completion" and legacy.model == "small"
    assert legacy.choices[0].logprobs is not None and legacy.choices[0].logprobs.tokens == ["Paris."]

    calls = {(c["model"], c["prompt"]): c["params"] for c in double.calls()}
    small_easy = calls[("small", "Capital of France?")]
    assert (small_easy["top_p"], small_easy["seed"], small_easy["temperature"]) == (0.9, 7, 0.2)
    assert small_easy["logprobs"] is True and small_easy["top_logprobs"] == 5  # Herd's own, for its decision
    assert "metadata" not in small_easy  # the OpenAI platform's bookkeeping stays home
    medium_hard = calls[
        ("medium", "User: A hard one\nAssistant:")
    ]  # TGI: a transcript, OpenAI's params mapped
    assert (medium_hard["seed"], medium_hard["max_new_tokens"], medium_hard["top_n_tokens"]) == (7, 9, 5)
    assert medium_hard["stop"] == ["\nUser:"]
    stored = db.execute(
        "SELECT count(*) FILTER (WHERE logprobs IS NOT NULL), count(*) FROM attempts"
    ).fetchone()
    assert stored == (3, 4)  # only the attempts of requests that asked for logprobs keep them


def test_a_model_named_alone_answers_alone(services, db, double, herd) -> None:  # type: ignore[no-untyped-def]
    double.script([], default={**UNSURE, "text": "Unsure."})
    result = store(
        services, herd, jsonl(request("a", "Hi", model="small"), request("b", "Yo", model="small"))
    )
    run(services, herd, result.dispatched)
    outputs, _, _ = exported(services)
    assert [(line["response"]["body"]["model"], line["herd"]["models"]) for line in outputs] == [
        ("small", ["small"]),
        ("small", ["small"]),
    ]
    assert db.execute("SELECT kind, entry_model FROM jobs").fetchone() == ("direct", "small")
    assert {c["model"] for c in double.calls()} == {"small"}


def test_a_file_with_bad_lines_stores_nothing_and_names_every_bad_line(services, db, herd) -> None:  # type: ignore[no-untyped-def]
    data = jsonl(
        request("ok-1", "Hi"),
        "{broken",
        request("ok-2", "Hi", model="gpt-9"),
        "",
        request("ok-3", "Hi", stream=True),
        request("ok-4", "Hi", model="small"),  # a route other than the first line's
        request("ok-5", "Hi", url="/v1/completions"),  # fine: no endpoint was fixed
    )
    with pytest.raises(BatchInvalidError) as caught:
        store(services, herd, data)
    errors = caught.value.errors
    assert [(e.line, e.code, e.param) for e in errors] == [
        (2, "invalid_json_line", None),
        (3, "model_not_found", "body.model"),
        (5, "invalid_value", "body.stream"),
        (6, "invalid_value", "body.model"),
    ]
    assert "it serves: herd, chat, small, medium, large" in errors[1].message
    assert str(caught.value).splitlines()[0].startswith("in.jsonl:2: not valid JSON")
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM prompts").fetchone() == (0,)


def test_repeated_custom_ids_are_named_by_line(services, db, herd) -> None:  # type: ignore[no-untyped-def]
    fillers = [request(f"x{i}", "y") for i in range(8)]
    data = jsonl(request("a", "1"), request("b", "2"), request("a", "3"), *fillers, request("b", "4"))
    with pytest.raises(BatchInvalidError) as caught:
        store(services, herd, data)
    found = sorted((e.line, e.code) for e in caught.value.errors)
    assert found == [(3, "duplicate_custom_id"), (12, "duplicate_custom_id")]
    assert db.execute("SELECT count(*) FROM prompts").fetchone() == (0,)


def test_an_api_batch_holds_its_endpoint_and_its_size(services, db, herd) -> None:  # type: ignore[no-untyped-def]
    data = jsonl(request("a", "1"), request("b", "2", url="/v1/completions"), request("c", "3"))
    with pytest.raises(BatchInvalidError) as caught:
        store(services, herd, data, endpoint="/v1/chat/completions", max_requests=2)
    assert [(e.line, e.code, e.param) for e in caught.value.errors] == [
        (2, "invalid_value", "url"),
        (3, "too_many_requests", None),
    ]
    with pytest.raises(BatchInvalidError, match="the file has no requests"):
        store(services, herd, b"\n\n")


def test_a_calibration_needs_a_route_not_a_model(services, db, herd) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="'small' names one"):
        store(services, herd, jsonl(request("a", "1", model="small")), calibration=True)


def test_failed_requests_go_to_the_error_lines_and_the_files_read_the_same_every_time(
    services, db, double, herd
) -> None:  # type: ignore[no-untyped-def]
    double.script([{"match": "doomed", "errors": [400, 400, 400, 400, 400, 400]}], default=SURE)
    result = store(services, herd, jsonl(request("fine", "ok"), request("doomed", "doomed")))
    run(services, herd, result.dispatched)
    outputs, errors, first = exported(services)
    assert [line["custom_id"] for line in outputs] == ["fine"]
    assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
        ("doomed", None, "request_failed")
    ]
    assert "400" in errors[0]["error"]["message"]
    assert exported(services)[2] == first  # the same ledger, the same bytes
    for raw in first.splitlines():
        BatchRequestOutput.model_validate_json(raw)  # what vLLM's run-batch writes, its parser reads


# vLLM's own example batch file, as it is (vllm-project/vllm
# examples/offline_inference/openai_batch/openai_example_batch.jsonl @c6991a3b).
VLLM_EXAMPLE = (
    b'{"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": '
    b'"meta-llama/Meta-Llama-3-8B-Instruct", "messages": [{"role": "system", "content": "You are a helpful '
    b'assistant."},{"role": "user", "content": "Hello world!"}],"max_completion_tokens": 1000}}\n'
    b'{"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions", "body": {"model": '
    b'"meta-llama/Meta-Llama-3-8B-Instruct", "messages": [{"role": "system", "content": "You are an '
    b'unhelpful assistant."},{"role": "user", "content": "Hello world!"}],"max_completion_tokens": 1000}}\n'
)


def test_vllms_example_file_is_accepted_and_herds_own_lines_parse_in_vllm(services, db, herd) -> None:  # type: ignore[no-untyped-def]
    for raw in VLLM_EXAMPLE.splitlines():
        BatchRequestInput.model_validate_json(raw)
    # The example names vLLM's model; a herd file maps that name to its chat task with one route.
    routed = herd.model_copy(update={"routes": {"meta-llama/Meta-Llama-3-8B-Instruct": "chat"}})
    assert store(services, routed, VLLM_EXAMPLE).added == 2
    ours = jsonl(
        request("a", "Hi", temperature=0.1, seed=1, logprobs=True, top_logprobs=3, stop=["\n"]),
        request("b", "Go on", url="/v1/completions", max_tokens=5),
    )
    store(services, herd, ours, job="b2")
    for raw in ours.splitlines():
        BatchRequestInput.model_validate_json(raw)


def test_a_batch_for_a_cascade_carries_the_herd_files_audit_and_a_model_alone_none(  # type: ignore[no-untyped-def]
    services, db, double, tmp_path
) -> None:
    """The herd file's `audit:` applies to a batch file as to a document set: its sampled requests are
    copied, fields and all, into `<job>~audit` for the reference alone, which answers them from its
    own messages; the batch's own answers and lines are untouched. A model asked alone is no cascade:
    no default audit, and asking one is an error naming the option."""
    double.script([], default={**SURE, "text": "Paris."})
    path = tmp_path / "herd.yaml"
    path.write_text(chat_herd_yaml(double) + "audit: {rate: 0.5, reference: medium}\n")
    herd = load_herd(path)
    keys = [f"r{i:02d}" for i in range(30)]
    data = jsonl(*(request(k, f"Capital number {k}?", max_tokens=4) for k in keys))
    result = store(services, herd, data)
    sampled = {k for k in keys if audited("b1", k, 0.5)}
    assert result.audit == Audit(0.5, "medium") and result.audited == len(sampled) > 0
    run(services, herd, result.dispatched)
    outputs, errors, _ = exported(services)
    assert [o["custom_id"] for o in outputs] == keys and errors == []
    rows = db.execute(
        """SELECT p.doc_key, p.fields, f.model FROM prompts p JOIN jobs j ON j.id = p.job_id
           JOIN finals f ON f.prompt_id = p.id WHERE j.name = %s AND j.kind = 'audit'""",
        (audit_job_name("b1"),),
    ).fetchall()
    assert {k for k, _, _ in rows} == sampled and {m for _, _, m in rows} == {"medium"}
    assert all(f[REQUEST]["body"]["messages"][0]["content"] == f"Capital number {k}?" for k, f, _ in rows)

    override = store(services, herd, data, job="b2", audit_rate=1.0, audit_reference="small")
    assert override.audit == Audit(1.0, "small") and override.audited == len(keys)
    assert store(services, herd, data, job="b3", audit_rate=0.0).audit is None

    alone = jsonl(request("a", "Capital?", model="medium"))
    assert store(services, herd, alone, job="b4").audit is None
    with pytest.raises(InputError, match=r"--audit: only a live job can be audited \(this is a direct job\)"):
        store(services, herd, alone, job="b5", audit_rate=0.5)
    assert db.execute("SELECT count(*) FROM jobs WHERE name LIKE 'b5%%'").fetchone() == (0,)

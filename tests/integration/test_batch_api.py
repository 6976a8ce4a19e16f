"""`herd serve` driven by the official OpenAI SDK, as a user's batch script drives OpenAI: real server
process, real worker processes, real Postgres and Redis, the endpoint double behind the models."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
from openai import OpenAI
from openai.types import Completion
from openai.types.chat import ChatCompletion

from herd.embedded.servers import ensure_redis, stop_all
from herd.quality.audit import audit_job_name, audited
from tests.support.api import ApiServer, create_key, wait_batch
from tests.support.harness import Herd, chat_herd_yaml, wait_for

SURE, UNSURE = {"first": [0.95, 0.01]}, {"first": [0.55, 0.45]}
# The keeper polls often and a cancelled batch waits a second for requests already at a model.
FAST = {"HERD_API_POLL_S": "0.2", "HERD_API_DRAIN_S": "1"}


def line(custom_id: str, content: str, model: str = "herd", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
    }


def jsonl(path: Path, items: Sequence[dict[str, Any] | str]) -> Path:
    path.write_text("".join((json.dumps(i) if isinstance(i, dict) else i) + "\n" for i in items))
    return path


@pytest.fixture
def serve() -> Iterator[Callable[..., ApiServer]]:
    """`serve(herd, **env)` starts `herd serve`; its SDK clients are closed after the test."""
    servers: list[ApiServer] = []

    def start(herd: Herd, **env: str) -> ApiServer:
        servers.append(ApiServer(herd.procs, {**herd.env, **FAST, **env}, herd.path.parent / "serve.log"))
        return servers[-1].start()

    yield start
    for server in servers:
        server.close()


def lines_of(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(raw) for raw in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def herd_with(make_herd: Callable[..., Herd], double) -> Callable[..., Herd]:  # type: ignore[no-untyped-def]
    def make(**env: str) -> Herd:
        return make_herd(chat_herd_yaml(double), **FAST, **env)

    return make


def test_the_sdk_runs_a_batch_from_upload_to_output_and_error_files(
    herd_with, serve, double, db, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    double.script(
        [
            {"match": "hard", "model": "small", **UNSURE, "text": "Maybe."},
            {"match": "hard", "model": "medium", **SURE, "text": "Surely."},
            {"match": "doomed", "errors": [400] * 10},
        ],
        default={**SURE, "text": "Paris."},
    )
    herd = herd_with()
    for model in ("small", "medium"):
        herd.start_worker(model)
    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    items = [line(f"r{i}", f"easy {i}") for i in range(4)]
    items += [line("hard", "a hard one", logprobs=True, top_logprobs=2), line("doomed", "doomed")]
    upload = client.files.create(file=jsonl(tmp_path / "in.jsonl", items), purpose="batch")
    assert (upload.purpose, upload.filename, upload.status) == ("batch", "in.jsonl", "processed")
    assert upload.bytes == (tmp_path / "in.jsonl").stat().st_size
    assert client.files.content(upload.id).content == (tmp_path / "in.jsonl").read_bytes()

    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"night": "monday"},
    )
    assert batch.status == "validating" and batch.metadata == {"night": "monday"}
    done = wait_batch(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 5, 1)
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at  # type: ignore[operator]
    assert done.expires_at == done.created_at + 24 * 3600

    outputs = lines_of(client, done.output_file_id)
    assert [o["custom_id"] for o in outputs] == ["r0", "r1", "r2", "r3", "hard"]
    bodies = {o["custom_id"]: ChatCompletion.model_validate(o["response"]["body"]) for o in outputs}
    assert {b.model for k, b in bodies.items() if k != "hard"} == {"small"}
    assert bodies["hard"].model == "medium" and bodies["hard"].choices[0].message.content == "Surely."
    assert bodies["r0"].choices[0].logprobs is None and bodies["hard"].choices[0].logprobs is not None
    assert all(o["error"] is None and o["response"]["status_code"] == 200 for o in outputs)
    errors = lines_of(client, done.error_file_id)
    assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
        ("doomed", None, "request_failed")
    ]
    out_file = client.files.retrieve(done.output_file_id)  # type: ignore[arg-type]
    assert out_file.purpose == "batch_output" and out_file.bytes == len(
        client.files.content(out_file.id).content
    )

    # A batch is a Herd job: `herd status` and `herd report` take its id.
    status = herd.cli("status", batch.id).stdout
    assert f"job {batch.id} (task chat): 6 prompts" in status and "done: 5" in status
    report = json.loads(herd.cli("report", batch.id, "--format", "json").stdout)
    assert {row["policy"] for row in report["rows"]} >= {"small", "medium"}


def test_a_file_with_bad_lines_fails_validation_naming_each_line(herd_with, serve, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    herd = herd_with()
    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    items: list[dict[str, Any] | str] = [line("a", "x"), "{oops", line("b", "x", model="gpt-9")]
    items += [line("c", "x"), line("d", "x", n=3), line("a", "dup")]
    upload = client.files.create(file=jsonl(tmp_path / "bad.jsonl", items), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_batch(client, batch.id)
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.errors is not None and failed.errors.data is not None
    assert [(e.line, e.code, e.param) for e in failed.errors.data] == [
        (2, "invalid_json_line", None),
        (3, "model_not_found", "body.model"),
        (5, "invalid_value", "body.n"),
    ]
    assert failed.request_counts is not None and failed.request_counts.total == 0
    assert failed.output_file_id is None and failed.error_file_id is None
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)  # all or nothing

    # Fixed, the duplicate id is the one error left, named by its line too.
    fixed = [line("a", "x"), line("b", "x"), line("c", "x"), line("a", "dup")]
    upload = client.files.create(file=jsonl(tmp_path / "dup.jsonl", fixed), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_batch(client, batch.id)
    assert failed.errors is not None and failed.errors.data is not None
    assert [(e.line, e.code) for e in failed.errors.data] == [(4, "duplicate_custom_id")]


def test_another_owner_sees_404_and_a_missing_wrong_or_revoked_key_gets_401(
    herd_with, serve, db, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    herd = herd_with()
    server = serve(herd)
    alice_key = create_key(herd.env, tmp_path, "alice")
    alice, bob = server.client(alice_key), server.client(create_key(herd.env, tmp_path, "bob"))
    upload = alice.files.create(file=jsonl(tmp_path / "in.jsonl", [line("a", "x")]), purpose="batch")
    batch = alice.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for call in (
        lambda: bob.files.retrieve(upload.id),
        lambda: bob.files.content(upload.id),
        lambda: bob.files.delete(upload.id),
        lambda: bob.batches.retrieve(batch.id),
        lambda: bob.batches.cancel(batch.id),
        lambda: bob.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(bob.files.list()) == [] and list(bob.batches.list()) == []
    # A second key of the same owner sees everything the first made.
    alice_again = server.client(create_key(herd.env, tmp_path, "alice"))
    assert alice_again.batches.retrieve(batch.id).id == batch.id

    with pytest.raises(openai.AuthenticationError) as caught:
        server.client("sk-herd-not-a-key").files.list()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    # The SDK cannot send no key at all; a plain HTTP client can.
    refused = httpx.get(f"{server.url}/v1/files", timeout=30)
    assert refused.status_code == 401 and "didn't provide an API key" in refused.json()["error"]["message"]
    herd.cli("keys", "revoke", alice_key[:16])
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        alice.files.list()
    keys = herd.cli("keys", "list").stdout
    assert keys.count("alice") == 2 and keys.count("bob") == 1 and alice_key not in keys


def test_lists_page_newest_first_with_after_limit_and_has_more(herd_with, serve, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    herd = herd_with()
    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    uploads = [
        client.files.create(file=jsonl(tmp_path / f"in{i}.jsonl", [line("a", str(i))]), purpose="batch")
        for i in range(5)
    ]
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == [uploads[4].id, uploads[3].id] and page.has_more
    assert [f.id for f in client.files.list(limit=2)] == [u.id for u in reversed(uploads)]  # every page
    assert [f.id for f in client.files.list(order="asc", after=uploads[1].id)] == [u.id for u in uploads[2:]]
    batches = [
        client.batches.create(input_file_id=u.id, endpoint="/v1/chat/completions", completion_window="24h")
        for u in uploads[:3]
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == [batches[2].id, batches[1].id] and first.has_more
    last = client.batches.list(limit=2, after=batches[1].id)
    assert [b.id for b in last.data] == [batches[0].id] and not last.has_more
    assert [b.id for b in client.batches.list(limit=2)] == [b.id for b in reversed(batches)]
    with pytest.raises(openai.BadRequestError, match="limit"):
        client.batches.list(limit=101)
    wait_batch(client, batches[0].id, until=("in_progress",))  # validated: its input may go now
    deleted = client.files.delete(uploads[0].id)
    assert deleted.deleted and uploads[0].id not in [f.id for f in client.files.list()]


def test_cancel_keeps_the_finished_part_and_cancels_the_rest(herd_with, serve, double, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A window of two prompts, and no worker for `medium`: the two hard requests escalate and wait there,
    # holding the window, so the batch stops mid-run, deterministically, with 2 answers and 6 pending.
    double.script([{"match": "hard", "model": "small", **UNSURE}], default=SURE)
    herd = herd_with(HERD_DISPATCH_WINDOW="2")
    herd.start_worker("small")
    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    items = [line("e0", "easy"), line("e1", "easy"), line("h2", "hard"), line("h3", "hard")]
    items += [line(f"e{i}", "easy") for i in range(4, 10)]
    upload = client.files.create(file=jsonl(tmp_path / "in.jsonl", items), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    _wait_rows(
        db,
        batch.id,
        "SELECT count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id "
        "WHERE j.name = %s AND p.model = 'medium' AND p.state = 'queued'",
        2,
    )
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress" and running.request_counts.completed == 2  # type: ignore[union-attr]

    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")  # asking twice is harmless
    cancelled = wait_batch(client, batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert cancelled.request_counts is not None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (2, 8)
    assert [o["custom_id"] for o in lines_of(client, cancelled.output_file_id)] == ["e0", "e1"]
    errors = lines_of(client, cancelled.error_file_id)
    assert len(errors) == 8 and {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(_finished_batch(client, tmp_path))


def _finished_batch(client: OpenAI, tmp_path: Path) -> str:
    upload = client.files.create(file=jsonl(tmp_path / "one.jsonl", [line("z", "easy")]), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_batch(client, batch.id).status == "completed"
    return batch.id


def _wait_rows(db: psycopg.Connection, batch_id: str, query: str, want: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (row := db.execute(query, (batch_id,)).fetchone()) is None or row[0] < want:
        assert time.monotonic() < deadline, f"{query} stayed at {row}"
        time.sleep(0.2)


def test_a_server_killed_mid_batch_comes_back_with_the_same_complete_output(
    herd_with, serve, double, db, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    double.script([{"match": "hard", "model": "small", **UNSURE}], default=SURE)
    herd = herd_with()
    herd.start_worker("small")  # `medium` starts only once the server is dead
    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    items = [line(f"r{i}", "hard" if i % 3 == 0 else "easy") for i in range(12)]
    upload = client.files.create(file=jsonl(tmp_path / "in.jsonl", items), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    _wait_rows(
        db,
        batch.id,
        "SELECT count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id "
        "WHERE j.name = %s AND p.state = 'done'",
        8,
    )
    assert client.batches.retrieve(batch.id).status == "in_progress"
    server.kill()  # mid-batch: 8 answered, 4 waiting for `medium`

    herd.start_worker("medium")
    assert wait_for(db, batch.id) == {"done": 12}  # the workers finish without the server
    server.start()
    done = wait_batch(client, batch.id)
    assert done.status == "completed"
    first = client.files.content(done.output_file_id).content  # type: ignore[arg-type]
    outputs = [json.loads(raw) for raw in first.splitlines()]
    assert [o["custom_id"] for o in outputs] == [f"r{i}" for i in range(12)]
    assert {o["custom_id"]: o["response"]["body"]["model"] for o in outputs}["r3"] == "medium"

    server.kill()
    server.start()
    assert client.files.content(done.output_file_id).content == first  # type: ignore[arg-type]
    assert client.batches.retrieve(batch.id).output_file_id == done.output_file_id


def test_the_same_file_gives_the_same_answers_through_the_cli_and_the_api(
    herd_with, serve, double, db, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    double.script(
        [
            {"match": "hard", "model": "small", **UNSURE, "text": "Maybe."},
            {"match": "hard", "model": "medium", **SURE, "text": "Surely."},
        ],
        default={**SURE, "text": "Paris."},
    )
    herd = herd_with()
    for model in ("small", "medium"):
        herd.start_worker(model)
    items = [line(f"r{i}", "hard" if i % 2 else "easy", seed=i) for i in range(6)]
    items.append(
        {
            "custom_id": "legacy",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "herd", "prompt": "easy", "max_tokens": 4},
        }
    )
    path = jsonl(tmp_path / "requests.jsonl", items)

    herd.cli("submit", str(path), "--job", "nightly")
    assert wait_for(db, "nightly") == {"done": 7}
    herd.cli(
        "export",
        "nightly",
        "--format",
        "openai-batch",
        "-o",
        str(tmp_path / "out.jsonl"),
        "--errors",
        str(tmp_path / "err.jsonl"),
    )
    via_cli = [json.loads(raw) for raw in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (tmp_path / "err.jsonl").read_text() == ""

    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    # One batch, one endpoint (as OpenAI): the chat lines here; the legacy line has its own batch.
    chat_only = jsonl(tmp_path / "chat.jsonl", items[:-1])
    upload = client.files.create(file=chat_only, purpose="batch")
    batch = wait_batch(
        client,
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    via_api = lines_of(client, batch.output_file_id)

    def answers(lines: list[dict[str, Any]]) -> dict[str, tuple[str, str, list[str]]]:
        out = {}
        for o in lines:
            body = o["response"]["body"]
            choice = body["choices"][0]
            text = choice["message"]["content"] if body["object"] == "chat.completion" else choice["text"]
            out[o["custom_id"]] = (text, body["model"], o["herd"]["models"])
        return out

    cli_answers = answers(via_cli)
    assert answers(via_api) == {k: v for k, v in cli_answers.items() if k != "legacy"}
    assert cli_answers["r1"] == ("Surely.", "medium", ["small", "medium"])
    assert cli_answers["legacy"] == ("Paris.", "small", ["small"])
    Completion.model_validate(via_cli[-1]["response"]["body"])


def test_bad_requests_get_a_clear_4xx_and_nothing_is_stored(herd_with, serve, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    herd = herd_with()
    server = serve(herd, HERD_API_MAX_FILE_BYTES="4096")
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    big = jsonl(tmp_path / "big.jsonl", [line(f"r{i}", "x" * 100) for i in range(100)])
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=big, purpose="batch")
    assert caught.value.status_code == 413 and "at most 4096 bytes" in str(caught.value)
    assert list(client.files.list()) == []
    small = jsonl(tmp_path / "small.jsonl", [line("a", "x")])
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=small, purpose="fine-tune")
    upload = client.files.create(file=small, purpose="batch")
    for kwargs, param in (
        ({"endpoint": "/v1/embeddings", "completion_window": "24h"}, "endpoint"),
        ({"endpoint": "/v1/chat/completions", "completion_window": "forever"}, "completion_window"),
        (
            {"endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"k": "v" * 600}},
            "metadata",
        ),
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            client.batches.create(input_file_id=upload.id, **kwargs)  # type: ignore[arg-type]
        assert bad.value.param == param
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    # A body nested deeper than the server's stack (json recurses once per level) is a 400, not a 500.
    deep = httpx.post(
        f"{server.url}/v1/batches",
        content=b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert deep.status_code == 400 and "must be JSON" in deep.text, deep.text
    assert list(client.batches.list()) == []


def test_a_batch_is_audited_by_the_herd_files_default_or_its_metadata(  # type: ignore[no-untyped-def]
    make_herd, serve, double, db, tmp_path
) -> None:
    """A batch for the cascade carries the herd file's `audit:`; `metadata` may set its own rate and
    reference (`herd_audit`, `herd_audit_reference`) or turn it off ("0"). The audit's requests are
    its own job: the batch's counts and files hold only the batch's requests."""
    double.script([], default={**SURE, "text": "Paris."})
    herd = make_herd(chat_herd_yaml(double) + "audit: {rate: 1, reference: medium}\n", **FAST)
    for model in ("small", "medium"):
        herd.start_worker(model)
    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    keys = [f"r{i:02d}" for i in range(12)]
    upload = client.files.create(
        file=jsonl(tmp_path / "in.jsonl", [line(k, f"capital {k}") for k in keys]), purpose="batch"
    )

    def create(metadata: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=metadata,
        )

    def sample(batch_id: str) -> set[tuple[str, str]]:
        rows = db.execute(
            """SELECT p.doc_key, j.entry_model FROM prompts p JOIN jobs j ON j.id = p.job_id
               WHERE j.name = %s AND j.kind = 'audit'""",
            (audit_job_name(batch_id),),
        ).fetchall()
        return {(str(k), str(m)) for k, m in rows}

    default, own, off = (
        create(),
        create({"herd_audit": "0.5", "herd_audit_reference": "small"}),
        create({"herd_audit": "0"}),
    )
    for batch in (default, own, off):
        done = wait_batch(client, batch.id)
        assert done.status == "completed", done
        assert done.request_counts is not None and done.request_counts.total == len(keys)
        assert [o["custom_id"] for o in lines_of(client, done.output_file_id)] == keys
    assert sample(default.id) == {(k, "medium") for k in keys}
    assert sample(own.id) == {(k, "small") for k in keys if audited(own.id, k, 0.5)}
    assert sample(off.id) == set()
    assert wait_for(db, audit_job_name(default.id), timeout=180) == {"done": len(keys)}
    status = herd.cli("status", default.id).stdout
    assert f"audit: {len(keys)} prompts sampled at rate 1, answered by medium alone" in status
    report = json.loads(herd.cli("report", default.id, "--format", "json").stdout)["audit"]
    assert report["rows"][0]["prompts"] == len(keys) and report["rows"][0]["measure"] == "agreement"

    with pytest.raises(openai.BadRequestError) as bad:
        create({"herd_audit": "lots"})
    assert bad.value.param == "metadata.herd_audit"
    failed = wait_batch(client, create({"herd_audit": "0.5", "herd_audit_reference": "huge"}).id)
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
    assert [e.message for e in failed.errors.data] == [
        "metadata.herd_audit_reference: the model 'huge' is not in the herd file"
    ]


def test_a_batch_whose_broker_is_down_at_validation_runs_once_the_broker_is_back(
    own_redis, herd_with, serve, double, db, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The keeper commits the job, the publish meets a dead Redis: the batch goes on, and its requests
    are sent at the first housekeeping tick after Redis is back (a worker's pump here), not a stale
    period (900 s, the default) later."""
    services, home = own_redis
    double.script([], default={**SURE, "text": "Paris."})
    herd = herd_with(HERD_BROKER_URL=services.broker_url)
    server = serve(herd)
    client = server.client(create_key(herd.env, tmp_path, "alice"))
    items = [line(f"r{i}", f"easy {i}") for i in range(3)]
    upload = client.files.create(file=jsonl(tmp_path / "in.jsonl", items), purpose="batch")
    stop_all(home)
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_batch(client, batch.id, until=("in_progress",), timeout=60).status == "in_progress"
    due = db.execute(
        """SELECT bool_and(p.enqueued_at <= now() - interval '900 seconds'), count(*) FROM prompts p
           JOIN jobs j ON j.id = p.job_id WHERE j.name = %s AND p.state = 'queued'""",
        (batch.id,),
    ).fetchone()
    assert due == (True, 3), server.log.read_text()[-4000:]
    assert ensure_redis(home) == services.broker_url  # back, on the same port, with no message in it
    herd.start_worker("small")
    done = wait_batch(client, batch.id, timeout=120)
    assert done.status == "completed", done
    assert [o["custom_id"] for o in lines_of(client, done.output_file_id)] == ["r0", "r1", "r2"]

"""The batch keeper in process, step by step: real Postgres and the real file store, the cascade run by
hand (herd/api/keeper.py's lifecycle without the HTTP server or Celery). What a user cannot time from
outside: a crash while the files are written, a window that runs out, a cancel before validation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from herd.api import batches, files
from herd.api.keeper import Keeper, Limits
from herd.api.store import DirectoryStore, FileStore, FileWriter, PostgresStore
from herd.backends.registry import make_backends
from herd.batch import export
from herd.cascade.pipeline import Pipeline
from herd.embedded.servers import ensure_redis, stop_all
from herd.herdfile.model import HerdConfig, load_herd
from herd.policy.active import ActivePolicies
from herd.quality.audit import audit_job_name
from herd.queues import publish
from herd.vocabulary import Dispatch, StepKey
from tests.support.cascade import connector, drive
from tests.support.endpoint import EndpointDouble
from tests.support.harness import Services, chat_herd_yaml
from tests.unit.test_submit_publish import STALE_S, due, next_tick, queued_messages

CHAT = "/v1/chat/completions"


@pytest.fixture
def herd(tmp_path: Path, double: EndpointDouble) -> HerdConfig:
    path = tmp_path / "herd.yaml"
    path.write_text(chat_herd_yaml(double))
    double.script([], default={"first": [0.95, 0.01], "text": "Paris."})
    return load_herd(path)


@pytest.fixture
def connect(services: Services, db: psycopg.Connection) -> Any:
    @contextmanager
    def open_conn() -> Iterator[psycopg.Connection]:
        with psycopg.connect(services.database_url) as conn:  # commits on a clean exit, as the pool does
            yield conn

    return open_conn


class Keeping:
    """A keeper, the messages it published, and a way to answer them in process."""

    def __init__(self, services: Services, herd: HerdConfig, connect: Any, store: FileStore) -> None:
        self.sent: list[Dispatch] = []
        self.herd, self.services, self.connect, self.store = herd, services, connect, store
        self.keeper = Keeper(
            herd=herd,
            connect=connect,
            store=store,
            limits=Limits(100, 1000, 0.0, STALE_S),
            publish=self.sent.extend,
        )

    def batch(self, n: int, window: str = "24h") -> str:
        text = "".join(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": CHAT,
                    "body": {"model": "herd", "messages": [{"role": "user", "content": f"q{i}"}]},
                }
            )
            + "\n"
            for i in range(n)
        )
        with self.connect() as conn:
            upload = files.store_file(
                conn, self.store, owner="alice", filename="in.jsonl", purpose="batch", chunks=[text.encode()]
            )
            body = {"input_file_id": upload.id, "endpoint": CHAT, "completion_window": window}
            return batches.create(conn, "alice", body).id

    def answer(self, count: int | None = None) -> None:
        """Run the first `count` published messages (all when None) through the cascade."""
        url = self.services.database_url
        pipe = Pipeline(self.herd, make_backends(self.herd), connector(url), ActivePolicies(connector(url)))
        todo = self.sent if count is None else self.sent[:count]
        if count is None:
            drive(pipe, todo, connector(url))
        else:
            for pid, model, stage, round_ in todo:
                pipe.run(pid, StepKey(model, stage, round_))

    def get(self, batch_id: str) -> batches.BatchRow:
        with self.connect() as conn:
            row = batches.get(conn, "alice", batch_id)
        assert row is not None
        return row

    def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        return [json.loads(raw) for raw in b"".join(self.store.read(file_id)).splitlines()]


@pytest.mark.parametrize("kind", ["postgres", "directory"])
def test_a_batch_goes_from_validating_to_completed(services, herd, connect, tmp_path, kind) -> None:  # type: ignore[no-untyped-def]
    store: FileStore = PostgresStore(connect) if kind == "postgres" else DirectoryStore(tmp_path / "files")
    keeping = Keeping(services, herd, connect, store)
    batch_id = keeping.batch(3)
    assert keeping.keeper.step(batch_id) == "in_progress" and len(keeping.sent) == 3
    assert keeping.keeper.step(batch_id) == "in_progress"  # nothing answered yet: nothing moves
    keeping.answer()
    assert keeping.keeper.step(batch_id) == "completed"
    done = keeping.get(batch_id)
    assert (done.total, done.completed, done.failed, done.error_file_id) == (3, 3, 0, None)
    assert [line["custom_id"] for line in keeping.lines(done.output_file_id)] == ["r0", "r1", "r2"]


class FailingOnce:
    """A store whose first output file write fails, as a crash or a full disk would end it."""

    def __init__(self, store: FileStore) -> None:
        self.store, self.failed = store, False

    def writer(self, conn: psycopg.Connection, file_id: str) -> FileWriter:
        writer = self.store.writer(conn, file_id)
        if self.failed:
            return writer
        self.failed = True

        class Broken:
            def write(self, data: bytes) -> None:
                raise OSError("disk full")

            def close(self) -> int:
                return 0

        return Broken()

    def read(self, file_id: str) -> Iterator[bytes]:
        return self.store.read(file_id)

    def delete(self, conn: psycopg.Connection, file_id: str) -> None:
        self.store.delete(conn, file_id)


def test_a_failure_while_writing_the_files_leaves_nothing_and_the_next_tick_finishes(
    services, herd, connect, db
) -> None:  # type: ignore[no-untyped-def]
    keeping = Keeping(services, herd, connect, PostgresStore(connect))
    batch_id = keeping.batch(2)
    keeping.keeper.step(batch_id)
    keeping.answer()
    keeping.keeper.store = FailingOnce(keeping.store)
    assert keeping.keeper.tick() == {}  # the step failed (logged) and moved nothing
    assert keeping.get(batch_id).status == "finalizing"
    assert db.execute("SELECT count(*) FROM api_files WHERE purpose = 'batch_output'").fetchone() == (0,)
    assert keeping.keeper.tick() == {batch_id: "completed"}
    assert len(keeping.lines(keeping.get(batch_id).output_file_id)) == 2


def test_past_its_window_a_batch_expires_with_its_finished_part(services, herd, connect, db) -> None:  # type: ignore[no-untyped-def]
    keeping = Keeping(services, herd, connect, PostgresStore(connect))
    batch_id = keeping.batch(4, window="1h")
    keeping.keeper.step(batch_id)
    keeping.answer(count=1)  # one answered; three still queued when the window ends
    db.execute("UPDATE api_batches SET expires_at = now() - interval '1 second' WHERE id = %s", (batch_id,))
    assert keeping.keeper.step(batch_id) == "expired"  # drain_s = 0: nothing waited for
    expired = keeping.get(batch_id)
    assert expired.expired_at is not None and (expired.completed, expired.failed) == (1, 3)
    assert [line["custom_id"] for line in keeping.lines(expired.output_file_id)] == ["r0"]
    errors = keeping.lines(expired.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        (f"r{i}", "batch_expired") for i in (1, 2, 3)
    ]


def test_a_batch_cancelled_before_validation_never_becomes_a_job(services, herd, connect, db) -> None:  # type: ignore[no-untyped-def]
    keeping = Keeping(services, herd, connect, PostgresStore(connect))
    batch_id = keeping.batch(2)
    with connect() as conn:
        assert batches.cancel(conn, "alice", batch_id).status == "cancelling"
    assert keeping.keeper.step(batch_id) == "cancelled"
    assert keeping.get(batch_id).output_file_id is None and keeping.sent == []
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_an_input_file_deleted_before_validation_fails_the_batch(services, herd, connect, db) -> None:  # type: ignore[no-untyped-def]
    keeping = Keeping(services, herd, connect, PostgresStore(connect))
    batch_id = keeping.batch(2)
    input_id = keeping.get(batch_id).input_file_id
    with connect() as conn:
        assert files.delete(conn, keeping.store, "alice", input_id)
    assert keeping.keeper.step(batch_id) == "failed"
    errors = keeping.get(batch_id).errors
    assert errors is not None and errors[0]["code"] == "file_not_found"


def test_a_cancelled_batch_stops_its_audit_too(services, connect, db, double, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "audited.yaml"
    path.write_text(chat_herd_yaml(double) + "audit: {rate: 1, reference: medium}\n")
    keeping = Keeping(services, load_herd(path), connect, PostgresStore(connect))
    batch_id = keeping.batch(3)
    assert keeping.keeper.step(batch_id) == "in_progress"
    audit = audit_job_name(batch_id)
    states = "SELECT p.state, p.error FROM prompts p JOIN jobs j ON j.id = p.job_id WHERE j.name = %s"
    assert sorted(state for state, _ in db.execute(states, (audit,)).fetchall()) == ["queued"] * 3
    with connect() as conn:
        assert batches.cancel(conn, "alice", batch_id).status == "cancelling"
    assert keeping.keeper.step(batch_id) == "cancelled"  # drain_s = 0: nothing waited for
    assert db.execute(states, (audit,)).fetchall() == [("failed", export.CANCELLED)] * 3


def test_a_batch_whose_broker_is_down_at_validation_is_sent_at_the_next_tick(
    publishing_to_own_redis, herd, connect, db
) -> None:  # type: ignore[no-untyped-def]
    services, home = publishing_to_own_redis
    keeping = Keeping(services, herd, connect, PostgresStore(connect))
    keeping.keeper.publish = publish  # the real one, to a Redis this test stops
    batch_id = keeping.batch(3)
    stop_all(home)
    # The job is committed: the batch goes on, its messages left due (was: the step raised, and the
    # next one moved the batch on with its prompts waiting a whole stale period for their messages).
    assert keeping.keeper.step(batch_id) == "in_progress"
    assert due(db, batch_id) == [True] * 3
    assert ensure_redis(home) == services.broker_url  # back, on the same port
    assert next_tick(services) == 3
    assert queued_messages(services.broker_url, "small") == 3
    assert due(db, batch_id) == [False] * 3

"""One cascade step in process, on the real Postgres: whatever goes wrong after the model call, the
step gets a recorded outcome with a readable reason, and the dispatch window holds under duplicates
and concurrent top-ups. (End to end, with workers: tests/test_reliability_e2e.py.)"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
import pytest

from herd.backends.base import Generation, GenerationRequest, PermanentError, Timing, TokenLogprob
from herd.cascade.pipeline import Pipeline, clean_text
from herd.herdfile.model import HerdConfig, load_herd
from herd.jobs.documents import Record
from herd.jobs.submit import submit
from herd.ledger import steps as ledger
from herd.vocabulary import Dispatch, StepKey
from tests.support.harness import Services

HERD = """\
models:
  small:
    protocol: openai
    endpoints: http://127.0.0.1:9/v1
    escalation: {next: large, measure: first_token_margin, threshold: 0.5}
  large:
    protocol: openai
    endpoints: http://127.0.0.1:9/v1
tasks:
  qa:
    kind: qa
"""


def confident(text: str, finish: str = "stop") -> Generation:
    first = TokenLogprob(
        text[:1] or "x", math.log(0.95), ((text[:1] or "x", math.log(0.95)), ("y", math.log(0.03)))
    )
    return Generation(text, (first,), 5, 1, finish, Timing(latency_s=0.01), endpoint="http://e")


class Fake:
    """A backend that runs `answer` for every request; counts its calls."""

    def __init__(self, answer: Callable[[GenerationRequest], Generation]) -> None:
        self.answer = answer
        self.calls = 0
        self._lock = threading.Lock()

    def generate(self, request: GenerationRequest) -> Generation:
        with self._lock:
            self.calls += 1
        return self.answer(request)


@pytest.fixture
def herd(tmp_path: Path) -> HerdConfig:
    path = tmp_path / "herd.yaml"
    path.write_text(HERD)
    return load_herd(path)


def connector(services: Services) -> Callable[[], AbstractContextManager[psycopg.Connection]]:
    @contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            yield conn

    return connect


def submitted(services: Services, herd: HerdConfig, n: int, window: int) -> list[Dispatch]:
    records = [
        Record(key=f"d{i}", text=f"question {i}", reference=None, source=f"docs:{i}") for i in range(n)
    ]
    with psycopg.connect(services.database_url) as conn:
        return submit(conn, herd, job="j", task="qa", records=records, window=window).dispatched


def states(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT state, count(*) FROM prompts GROUP BY state").fetchall())


def only_prompt(db: psycopg.Connection) -> tuple[str, str | None]:
    row = db.execute("SELECT state, error FROM prompts").fetchone()
    assert row is not None
    return row


def run_one(services: Services, herd: HerdConfig, small: Fake, large: Fake | None = None) -> Pipeline:
    submitted(services, herd, 1, 10)
    pipeline = Pipeline(herd, {"small": small, "large": large or small}, connector(services))
    pipeline.run(1, StepKey("small"))
    return pipeline


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda r: (_ for _ in ()).throw(TypeError("float() argument must be a number")), "unexpected error"),
        (lambda r: Generation("ok", (), 5, 0, "stop", Timing(latency_s=0.01)), "no scorable tokens"),
        (
            lambda r: Generation(
                "ok",
                (TokenLogprob("ok", 0.0, (("ok", "x"),)),),  # type: ignore[arg-type] # a non-float on purpose
                5,
                1,
                "stop",
                Timing(0.01),
            ),
            "cannot judge the answer",
        ),
    ],
)
def test_anything_raised_during_or_after_the_call_is_a_recorded_error(
    services, db, herd, answer, reason
) -> None:
    small = Fake(answer)
    pipeline = run_one(services, herd, small)
    state, error = only_prompt(db)
    assert state == "failed" and error is not None and reason in error
    attempts = db.execute("SELECT status, error FROM attempts").fetchall()
    assert len(attempts) == 1 and attempts[0][0] == "error"
    # A redelivery replays the recorded outcome: the model is not called again.
    assert pipeline.run(1, StepKey("small")).kind == "skipped"
    assert small.calls == 1


def test_an_empty_answer_is_an_error_never_a_final(services, db, herd) -> None:
    small = Fake(lambda r: confident("", finish="length"))
    run_one(services, herd, small)
    state, error = only_prompt(db)
    assert state == "failed"
    assert error == "small answer: empty answer (cut off at max_new_tokens=64), finish_reason=length"
    assert db.execute("SELECT count(*) FROM finals").fetchone() == (0,)
    assert db.execute("SELECT finish_reason, generated_tokens FROM attempts").fetchone() == ("length", 1)


def test_an_answer_cut_off_at_max_tokens_escalates_even_when_confident(services, db, herd) -> None:
    small = Fake(lambda r: confident("Paris is the capital of", finish="length"))
    large = Fake(lambda r: confident("Paris, and the last tier keeps a cut-off answer", finish="length"))
    pipeline = run_one(services, herd, small, large)
    assert db.execute("SELECT escalated, finish_reason FROM attempts").fetchall() == [(True, "length")]
    assert pipeline.run(1, StepKey("large")).kind == "final"
    final = db.execute("SELECT model, answer FROM finals").fetchone()
    assert final == ("large", "Paris, and the last tier keeps a cut-off answer")


def test_text_postgres_cannot_hold_is_cleaned_not_a_stuck_prompt(services, db, herd) -> None:
    # A byte-fallback <0x00> token and half an emoji in a model's answer.
    small = Fake(lambda r: confident("posi\x00tive \ud83d"))
    run_one(services, herd, small)
    assert only_prompt(db) == ("done", None)
    assert db.execute("SELECT answer FROM finals").fetchone() == ("positive \ufffd",)
    assert clean_text("a\x00b\udc80") == "ab\ufffd"


def test_fail_step_records_an_outcome_once(services, db, herd) -> None:
    submitted(services, herd, 3, 2)
    pipeline = Pipeline(herd, {}, connector(services))
    outcome = pipeline.fail_step(1, StepKey("small"), "internal error: KeyError('qa')")
    assert outcome.kind == "failed" and outcome.dispatches == ((3, "small", "answer", 0),)
    assert only_prompt_of(db, 1) == ("failed", "small answer: internal error: KeyError('qa')")
    assert pipeline.fail_step(1, StepKey("small"), "again").kind == "skipped"
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (1,)
    assert states(db) == {"failed": 1, "queued": 2}


def only_prompt_of(db: psycopg.Connection, prompt_id: int) -> tuple[str, str | None]:
    row = db.execute("SELECT state, error FROM prompts WHERE id = %s", (prompt_id,)).fetchone()
    assert row is not None
    return row


@pytest.mark.parametrize("outcome", ["final", "failed"])
def test_concurrent_duplicate_deliveries_do_not_widen_the_window(services, db, herd, outcome) -> None:
    # Two deliveries of one step run at once (a redelivery after the visibility timeout): both call
    # the model, one records; the other replays it and must not claim a second pending prompt.
    both = threading.Barrier(2, timeout=10)

    def answer(request: GenerationRequest) -> Generation:
        both.wait()
        if outcome == "failed":
            raise PermanentError("HTTP 400 from http://e: bad request", status=400, endpoint="http://e")
        return confident("Paris")

    small = Fake(answer)
    assert len(submitted(services, herd, 8, 2)) == 2
    pipeline = Pipeline(herd, {"small": small, "large": small}, connector(services))
    kinds: list[str] = []
    threads = [
        threading.Thread(target=lambda: kinds.append(pipeline.run(1, StepKey("small")).kind))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(kinds) == [outcome, outcome]
    assert states(db) == {"done" if outcome == "final" else "failed": 1, "queued": 2, "pending": 5}
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (1,)


def test_concurrent_top_ups_fill_the_window_exactly(services, db, herd) -> None:
    submitted(services, herd, 50, 0)
    assert states(db) == {"pending": 50}
    start = threading.Barrier(8, timeout=10)
    claimed: list[int] = []

    def top_up() -> None:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            start.wait()
            with conn.transaction():
                claimed.append(len(ledger.top_up(conn, 10)))

    threads = [threading.Thread(target=top_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(claimed) == 10
    assert states(db) == {"queued": 10, "pending": 40}


def test_top_up_refuses_to_run_outside_a_transaction(services, db) -> None:
    with pytest.raises(RuntimeError, match="inside a transaction"):
        ledger.top_up(db, 10)

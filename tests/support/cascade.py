"""In-process cascade runs for the policy tests: a two-model herd, fake backends scripted per prompt,
a driver that runs every dispatched step (and the pump's budget release) until the herd is idle."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import psycopg

from herd.backends.base import GenerationRequest, PermanentError
from herd.cascade.pipeline import Pipeline
from herd.herdfile.model import HerdConfig, load_herd
from herd.jobs.documents import Record
from herd.jobs.submit import submit
from herd.policy import versions as policies
from herd.policy.active import ActivePolicies
from herd.quality.scoring import score_job
from herd.vocabulary import Dispatch, StepKey
from tests.support.fakes import FakeBackend, generation

HERD = """\
models:
  small:
    protocol: openai
    endpoints: http://127.0.0.1:9/v1
    gpus: {type: L4, count: 1, usd_per_hour: 0.8}
    escalation: {next: large, measure: first_token_margin, threshold: 0.5}
  large:
    protocol: openai
    endpoints: http://127.0.0.1:9/v1
    gpus: {type: A100, count: 2, usd_per_hour: 3.0}
    %(refine)s
tasks:
  qa:
    kind: qa
"""

# Seconds each call keeps its endpoint busy: short enough that sequential calls never overlap, so
# every attempt is charged exactly latency × GPUs × price.
LATENCY = {"small": 0.001, "large": 0.002}
Script = Mapping[str, Mapping[str, tuple[str, float]]]  # model -> prompt key -> (answer, p(top token))
# Scripted non-answers: this answer makes the call fail (HTTP 500, the retries spent); an answer
# starting with CUT_OFF comes back cut off at max_new_tokens (finish_reason "length").
HTTP_500 = "!HTTP 500"
CUT_OFF = "!cut off:"


def record_guaranteed(conn: psycopg.Connection, policy: str, *, bound: float) -> int:
    """Record and activate `policy` (herd-file text) for task qa as `herd calibrate --method guarantee`
    does for `quality >= 0.9` at confidence 0.9, guaranteed with the given `bound`; its version id."""
    estimates = {
        "target": "quality >= 0.9",
        "promised_quality": 0.9,
        "method": "guarantee",
        "guaranteed": True,
        "confidence": 0.9,
        "bound": bound,
    }
    return policies.record(conn, "qa", policy, None, estimates)


def load(tmp_path: Path, refine: str = "") -> HerdConfig:
    path = tmp_path / "herd.yaml"
    path.write_text(HERD % {"refine": refine})
    return load_herd(path)


def scripted(script: Script) -> dict[str, FakeBackend]:
    """One fake backend per model answering each prompt (found by its key `qNN` in the prompt text)
    with the scripted answer and first-token probability (margin = 2p - 1), or the scripted
    non-answer (`HTTP_500`, `CUT_OFF`)."""

    def reply(model: str) -> Callable[[GenerationRequest], object]:
        def answer(request: GenerationRequest) -> object:
            text = request.prompt.text + " ".join(c for _, c in request.prompt.messages)
            key = re.findall(r"\bq\d+\b", text)[0]
            said, p = script[model][key]
            if said == HTTP_500:
                raise PermanentError(f"HTTP 500 from http://{model}: internal server error")
            cut = said.startswith(CUT_OFF)
            gen = generation(said.removeprefix(CUT_OFF), p_first=p, latency_s=LATENCY[model])
            return replace(gen, endpoint=f"http://{model}", finish_reason="length" if cut else "stop")

        return answer

    return {m: FakeBackend(default=reply(m)) for m in script}  # type: ignore[arg-type]


def connector(url: str) -> Callable[[], AbstractContextManager[psycopg.Connection]]:
    @contextmanager
    def open_conn() -> Iterator[psycopg.Connection]:
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn

    return open_conn


def pipeline(url: str, herd: HerdConfig, script: Script) -> Pipeline:
    connect = connector(url)
    return Pipeline(herd, scripted(script), connect, ActivePolicies(connect, ttl_s=0.0), window=1000)


def run_job(
    url: str,
    herd: HerdConfig,
    script: Script,
    job: str,
    references: Mapping[str, str],
    *,
    kind: str = "live",
    budget_usd: Decimal | None = None,
) -> None:
    """Submit one record per reference key (text 'question qNN') and run it to the end in process."""
    records = [
        Record(key, f"question {key}", ref, {}, f"t:{i}") for i, (key, ref) in enumerate(references.items())
    ]
    with psycopg.connect(url) as conn:
        result = submit(
            conn, herd, job=job, task="qa", records=records, window=1000, kind=kind, budget_usd=budget_usd
        )
    drive(pipeline(url, herd, script), result.dispatched, connector(url))


def drive(
    pipe: Pipeline,
    dispatches: list[Dispatch],
    connect: Callable[[], AbstractContextManager[psycopg.Connection]],
) -> None:
    """Run dispatched steps in order until none is left, then what the pump would release."""
    queue = deque(dispatches)
    while True:
        while queue:
            pid, model, stage, round_ = queue.popleft()
            queue.extend(pipe.run(pid, StepKey(model, stage, round_)).dispatches)
        with connect() as conn, conn.transaction():
            released = pipe.release_budgets(conn)
        if not released:
            return
        queue.extend(released)


def score(url: str, herd: HerdConfig, job: str) -> None:
    score_job(url, herd, job, scorer="exact")

"""The real local herd: SmolLM2-135M-Instruct and Gemma-3-270M from PyPI packages, served by
llama.cpp, answering through real Herd workers. Slow (a minute or two on 2 cores): marked
`realmodel`, deselect with `-m "not realmodel"`."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion
from rich.console import Console

from herd.herdfile.model import load_herd
from herd.local import localherd
from herd.local.demo import longdocs
from herd.local.demo.run import JOBS, write_herd_file
from tests.support.api import ApiServer, create_key, wait_batch
from tests.support.harness import Services, wait_for

# The real models are slow on a busy two-core machine: each test waits on its own deadline (up to 900 s),
# so the suite-wide 300 s timeout must not cut it short first.
pytestmark = [pytest.mark.realmodel, pytest.mark.timeout(1200)]
PER_TASK = 12


@pytest.fixture(scope="module")
def model_urls(services: Services) -> Iterator[dict[str, str]]:
    urls = {name: localherd.ensure_server(services.home, name) for name in localherd.MODELS}
    yield urls
    localherd.stop(services.home)


def sample(path: Path, out: Path, n: int) -> Path:
    """Every k-th record, so the sample mixes easy and hard documents."""
    lines = path.read_text().splitlines()
    step = max(1, len(lines) // n)
    out.write_text("\n".join(lines[::step][:n]) + "\n")
    return out


def test_real_herd_answers_measures_and_escalates(make_herd, db, services, model_urls, tmp_path) -> None:
    herd_file = write_herd_file(services.home, model_urls)
    herd = make_herd(herd_file.read_text())
    for model in localherd.MODELS:
        herd.start_worker(model)
    for task, path in JOBS.items():
        docs = sample(path, tmp_path / f"{task}.jsonl", PER_TASK)
        herd.cli("submit", str(docs), "--job", f"real-{task}", "--task", task)
    for task in JOBS:
        assert wait_for(db, f"real-{task}", timeout=600) == {"done": PER_TASK}

    rows = db.execute(
        """SELECT a.model, a.answer, a.first_token_margin, a.mean_entropy, a.max_entropy, a.mean_nll,
                  a.generated_tokens, a.escalated, a.latency_s
           FROM attempts a WHERE a.status = 'ok' ORDER BY a.id"""
    ).fetchall()
    smollm2 = [r for r in rows if r[0] == "smollm2"]
    assert len(smollm2) == 2 * PER_TASK  # the entry model answered every prompt
    for model, answer, margin, mean_h, max_h, nll, generated, _, latency in rows:
        assert answer.strip(), f"{model} gave an empty answer"
        assert generated >= 1 and latency > 0
        for value in (margin, mean_h, max_h, nll):
            assert math.isfinite(value)
        assert 0.0 <= margin <= 1.0 and 0.0 <= mean_h <= max_h
    margins = {round(r[2], 6) for r in smollm2}
    assert len(margins) > PER_TASK  # uncertainty really differs from prompt to prompt
    escalated = sum(r[7] for r in smollm2)
    assert 0 < escalated < len(smollm2)  # at the demo's threshold some escalate, some do not
    assert sum(1 for r in rows if r[0] == "gemma3") == escalated
    assert db.execute("SELECT count(*) FROM attempts WHERE status = 'error'").fetchone() == (0,)
    exported = [json.loads(line) for line in herd.cli("export", "real-capitals").stdout.splitlines()]
    assert {row["model"] for row in exported} <= set(localherd.MODELS) and len(exported) == PER_TASK

    # The real job scored against its references, then costed and ranked from the SQL views.
    herd.cli("score", "real-sentiment")
    report = json.loads(herd.cli("report", "real-sentiment", "--format", "json").stdout)
    assert report["scorer"] == "label"
    rows = {row["policy"]: row for row in report["rows"]}
    assert {"smollm2", "gemma3", "cascade", "smollm2-only"} <= set(rows)
    assert float(report["job"]["cost_usd"]) > 0
    for row in rows.values():
        assert 0.0 <= row["quality_refined"] <= 1.0 and row["perfics"] is not None and row["rank"] >= 1
    # The cascade pays for every call, the entry model alone only for its own.
    assert float(rows["cascade"]["cost_usd"]) > float(rows["smollm2-only"]["cost_usd"])


def test_real_herd_chunks_the_demo_long_documents(make_herd, db, services, model_urls) -> None:
    """`herd demo`'s long reviews through the real models (512-token context): every document is
    chunked by its real tokenizer, no request meets a context error, and the panel prints."""
    herd_file = write_herd_file(services.home, model_urls)
    herd = make_herd(herd_file.read_text())
    for model in localherd.MODELS:
        herd.start_worker(model)
    started = time.monotonic()
    herd.cli("submit", str(longdocs.FOLDER), "--job", longdocs.JOB, "--task", longdocs.TASK)
    deadline = time.monotonic() + 900
    while db.execute(
        """SELECT count(*) FROM prompts p JOIN jobs j ON j.id = p.job_id
           WHERE j.name = %s AND p.parent_id IS NULL AND p.state NOT IN ('done', 'failed')""",
        (longdocs.JOB,),
    ).fetchone() != (0,):
        assert time.monotonic() < deadline, "the long documents did not finish in 900 s"
        time.sleep(1.0)
    wall = time.monotonic() - started

    lines = longdocs.collect(db, load_herd(herd.path))
    assert [Path(line.key).name for line in lines] == list(longdocs.EXPECTED)
    for line in lines:
        assert line.state == "done" and line.chunks >= 3, line  # ~1,500-2,000 tokens over ~390 a chunk
        assert line.answer in ("positive", "negative") and line.cost_usd > 0, line
    errors = db.execute("SELECT count(*) FROM attempts WHERE status = 'error'").fetchone()
    assert errors == (0,)  # no chunk over the context, counted by the server's own tokenizer
    out = io.StringIO()
    longdocs.print_panel(Console(file=out, width=80), lines)
    print(f"\n{out.getvalue()}wall time {wall:.0f}s")
    assert "long documents, chunked" in out.getvalue()


CAPITALS = ["France", "Japan", "Italy", "Egypt", "Canada", "Kenya"]


def test_real_herd_answers_an_openai_batch(make_herd, db, services, model_urls, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An OpenAI batch through `herd serve` and the official SDK on the real local herd: the cascade's
    route (SmolLM2 through its chat template, Gemma-3 on a transcript when unsure), and Gemma-3 asked
    alone; every answer non-empty, with its model and its usage."""
    herd = make_herd(write_herd_file(services.home, model_urls).read_text(), HERD_API_POLL_S="0.5")
    for model in localherd.MODELS:
        herd.start_worker(model)
    server = ApiServer(herd.procs, herd.env, tmp_path / "serve.log").start()
    client = server.client(create_key(herd.env, tmp_path, "demo"))

    def run(model: str, questions: list[str]) -> list[ChatCompletion]:
        lines = [
            {
                "custom_id": f"{model}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "max_tokens": 8,
                    "logprobs": True,
                    "top_logprobs": 2,
                    "messages": [
                        {"role": "system", "content": "Answer with one word."},
                        {"role": "user", "content": f"What is the capital of {q}?"},
                    ],
                },
            }
            for i, q in enumerate(questions)
        ]
        path = tmp_path / f"{model}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        upload = client.files.create(file=path, purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_batch(client, batch.id, timeout=900)
        failures = client.files.content(done.error_file_id).text if done.error_file_id else ""
        assert done.status == "completed" and not failures, failures[:3000]
        outputs = [json.loads(raw) for raw in client.files.content(done.output_file_id).text.splitlines()]  # type: ignore[arg-type]
        assert [o["custom_id"] for o in outputs] == [line["custom_id"] for line in lines]
        for o in outputs:
            assert o["herd"]["models"][0] == (model if model in localherd.MODELS else "smollm2")
            assert len(o["herd"]["models"]) == o["herd"]["escalations"] + 1
        return [ChatCompletion.model_validate(o["response"]["body"]) for o in outputs]

    try:
        answers = run("herd", CAPITALS) + run("gemma3", CAPITALS[:2])
    finally:
        server.close()
    for answer in answers:
        (choice,) = answer.choices
        assert choice.message.content and choice.message.content.strip(), answer
        assert answer.model in localherd.MODELS
        assert (
            answer.usage is not None
            and answer.usage.prompt_tokens > 0
            and answer.usage.completion_tokens >= 1
        )
        assert choice.logprobs is not None and choice.logprobs.content
        assert all(len(token.top_logprobs) <= 2 for token in choice.logprobs.content)
    print("\n" + "\n".join(f"{a.model}: {a.choices[0].message.content!r}" for a in answers))

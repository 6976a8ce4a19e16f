"""`herd demo`'s long documents: the bundled set, its job under the chunk policy and the panel, with
fake backends in place of the models (tests/realmodel/test_realmodels.py runs them for real)."""

from __future__ import annotations

import io
import string
from decimal import Decimal
from pathlib import Path

import psycopg
from rich.console import Console

from herd.backends.base import Generation, GenerationRequest
from herd.cascade.pipeline import Pipeline
from herd.herdfile.model import HerdConfig, load_herd
from herd.local.demo import longdocs
from herd.local.demo.run import HERE
from herd.policy.active import ActivePolicies
from tests.support.cascade import connector, drive
from tests.support.fakes import FakeBackend, generation
from tests.support.harness import Services

HERD = """\
models:
  small:
    protocol: openai
    endpoints: http://127.0.0.1:9/v1
    prompt_mode: completion
    context_tokens: 256
    generation: {max_new_tokens: 8}
    gpus: {type: cpu, count: 1, usd_per_hour: 0.05}
    escalation: {next: large, measure: first_token_margin, threshold: 0.5}
  large:
    protocol: openai
    endpoints: http://127.0.0.1:9/v1
    prompt_mode: completion
    context_tokens: 256
    generation: {max_new_tokens: 8}
    gpus: {type: cpu, count: 1, usd_per_hour: 0.10}
tasks:
  sentiment:
    kind: classify
    labels: [positive, negative]
    completion: "Review: {text}\\nSentiment:"
    long_documents: {policy: chunk, overlap_tokens: 16, max_chunks: 40}
"""


def backends() -> dict[str, FakeBackend]:
    """Chunks about coffee read positive, the rest negative; small is unsure of every chunk of the
    laptop review, so that document (and only it) escalates to large, which chunks it again."""

    def reply(model: str, latency_s: float) -> object:
        def answer(request: GenerationRequest) -> Generation:
            text = request.prompt.text.rsplit("Review: ", 1)[-1]
            label = "positive" if "coffee" in text or "espresso" in text else "negative"
            unsure = model == "small" and ("Nimbus" in text or "laptop" in text)
            return generation(label, p_first=0.55 if unsure else 0.95, latency_s=latency_s)

        return answer

    return {m: FakeBackend(default=reply(m, s)) for m, s in (("small", 0.01), ("large", 0.02))}  # type: ignore[arg-type]


def run_long(url: str, herd: HerdConfig, out: Console) -> None:
    connect = connector(url)
    pipe = Pipeline(herd, backends(), connect, ActivePolicies(connect, ttl_s=0.0), window=1000)  # type: ignore[arg-type]
    with psycopg.connect(url) as conn:
        drive(pipe, longdocs.submit_long(conn, herd, 1000, out), connect)


def test_bundled_long_documents_are_longer_than_the_demo_context_and_have_verdicts(tmp_path: Path) -> None:
    records = longdocs.records()
    assert [r.key for r in records] == [
        "long/espresso.txt",
        "long/hotel.html",
        "long/laptop.pdf",
    ]
    assert {r.reference for r in records} == {"positive", "negative"}
    for r in records:
        assert 1000 < len(r.text.split()) < 3000  # far over 512 tokens, cheap to run
    html = records[1].text
    assert "Subscribe to our newsletter" not in html and "Accept all" not in html  # the site's clutter
    # The PDF is what its script makes from its source, word for word.
    source = (HERE / "pdfsource" / "laptop.txt").read_text()
    assert records[2].text.split() == source.split()

    urls = {"smollm2_url": "http://127.0.0.1:9/v1", "gemma3_url": "http://127.0.0.1:9/v1"}
    (tmp_path / "herd.yaml").write_text(string.Template((HERE / "herd.yaml").read_text()).substitute(urls))
    herd = load_herd(tmp_path / "herd.yaml")
    policy = herd.tasks[longdocs.TASK].long_documents
    assert policy is not None and policy.policy == "chunk"
    assert {m.context_tokens for m in herd.models.values()} == {512}  # as herd/local/serve.py starts them


def test_long_documents_job_and_panel(tmp_path: Path, services: Services, db: psycopg.Connection) -> None:
    (tmp_path / "herd.yaml").write_text(HERD)
    herd = load_herd(tmp_path / "herd.yaml")
    text = io.StringIO()
    out = Console(file=text, width=80)
    run_long(services.database_url, herd, out)

    lines = longdocs.collect(db, herd)
    by = {Path(line.key).name: line for line in lines}
    assert list(by) == ["espresso.txt", "hotel.html", "laptop.pdf"]
    assert [line.format for line in lines] == ["TXT", "HTML", "PDF"]
    assert by["laptop.pdf"].pages == 3 and by["espresso.txt"].pages is None
    for name, line in by.items():
        assert line.state == "done" and line.chunks > 1, name
        assert line.answer in ("positive", "negative"), name
        (cost,) = db.execute(
            """SELECT sum(ac.cost_usd) FROM attempt_costs ac JOIN prompts p ON p.id = ac.prompt_id
               JOIN prompts d ON d.id = coalesce(p.parent_id, p.id) WHERE d.doc_key = %s""",
            (line.key,),
        ).fetchone() or (None,)
        assert line.cost_usd == cost and line.cost_usd > Decimal(0), name  # the sum of its chunks'
    # Small was unsure of the laptop review's chunks: it escalated, and large chunked it again.
    assert by["laptop.pdf"].escalated_chunks > 0 and by["laptop.pdf"].models == (
        "small",
        "large",
    )
    assert by["espresso.txt"].escalated_chunks == 0 == by["hotel.html"].escalated_chunks
    assert by["espresso.txt"].answer == "positive" and by["hotel.html"].answer == "negative"

    longdocs.print_panel(out, lines)
    printed = text.getvalue()
    assert "demo-sentiment-long: 3 long documents, 3 new" in printed
    for name in ("espresso ", "hotel ", "laptop "):
        assert name in printed
    assert "PDF, 3 pp" in printed and "positive ✓" in printed and "negative ✓" in printed
    total = sum(line.chunks + line.escalated_chunks for line in lines)
    assert f"{total} chunk attempts" in printed and "3 of 3 combined labels right" in printed
    too_long = [line for line in printed.splitlines() if len(line) > 80]
    assert not too_long, "\n".join(too_long)

    # Again: nothing new, the same panel.
    again = io.StringIO()
    run_long(services.database_url, herd, Console(file=again, width=80))
    assert "3 long documents, 0 new" in again.getvalue()
    assert longdocs.collect(db, herd) == lines

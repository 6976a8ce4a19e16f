"""Issue 11 end to end: PDF/DOCX/HTML files made here, long documents under each `long_documents`
policy, through the CLI, real workers and the endpoint double (contexts in the double's tokens:
whitespace-separated words)."""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from pathlib import Path

from tests.support import docfiles
from tests.support.harness import wait_for

CONFIDENT = [0.95, 0.03]
UNSURE = [0.40, 0.35]
SMALL_CONTEXT = 1500  # words; a 20,000-word document needs ~16 chunks
SUMMARY_TEMPLATE = 'completion: "Summarize the document.\\n\\n{text}\\n\\nSummary:"'


def long_doc_herd(double, *, small_context_in_file: bool = False, refine: bool = False) -> str:  # type: ignore[no-untyped-def]
    """small (OpenAI chat; its context asked of the server's /info) -> large (TGI, 40,000 tokens in
    the herd file: it takes a 20,000-word document whole). `refine`: small critiques and rewrites
    its answer once (a critique may generate 256 tokens)."""
    small_context = f"    context_tokens: {SMALL_CONTEXT}\n" if small_context_in_file else ""
    small_context += "    refine: {rounds: 1, max_new_tokens: 256}\n" if refine else ""
    return f"""\
models:
  small:
    protocol: openai
    endpoints: {double.model_url("small")}/v1
    max_in_flight: 4
    timeout_s: 5
    retries: {{max: 2, backoff_s: 0.05, backoff_max_s: 0.2}}
    gpus: {{type: L4, count: 1, usd_per_hour: 0.8}}
    generation: {{max_new_tokens: 64}}
    escalation: {{next: large, measure: first_token_margin, threshold: 0.5}}
{small_context}  large:
    protocol: tgi
    endpoints: {double.model_url("large")}
    prompt_mode: completion
    max_in_flight: 4
    timeout_s: 10
    context_tokens: 40000
    retries: {{max: 2, backoff_s: 0.05, backoff_max_s: 0.2}}
    gpus: {{type: A100, count: 2, usd_per_hour: 3.0}}
tasks:
  qa:
    kind: qa
    completion: "Q: {{text}}\\nA:"
  sum_fail:
    kind: summarize
    {SUMMARY_TEMPLATE}
    long_documents: {{policy: fail}}
  sum_truncate:
    kind: summarize
    {SUMMARY_TEMPLATE}
    long_documents: {{policy: truncate, keep: head_tail}}
  sum_chunk:
    kind: summarize
    {SUMMARY_TEMPLATE}
    long_documents: {{policy: chunk, overlap_tokens: 50}}
  classify_chunk:
    kind: classify
    labels: [contract, report]
    completion: "Label (contract or report):\\n{{text}}\\nLabel:"
    long_documents: {{policy: chunk}}
"""


def twenty_thousand_words(tmp_path: Path, topic: str = "") -> Path:
    path = tmp_path / "long" / "annual-report.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(docfiles.long_text(20_000, seed=7, topic=topic))
    assert len(path.read_text().split()) >= 20_000
    return path


def test_pdf_docx_html_through_workers_and_unreadable_files_skipped(make_herd, db, double, tmp_path) -> None:
    double.script([], default={"text": "an answer", "first": CONFIDENT})
    herd = make_herd(long_doc_herd(double))
    folder = tmp_path / "set"
    folder.mkdir()
    docfiles.write_pdf(
        folder / "report.pdf", [docfiles.long_text(200, seed=1), docfiles.long_text(200, seed=2)]
    )
    docfiles.write_encrypted_pdf(folder / "locked.pdf", ["confidential"])
    docfiles.write_docx(folder / "contract.docx", "Supply contract", ["The supplier delivers monthly."])
    paragraphs = [" ".join(docfiles.sentences(5, seed=i)) for i in range(4)]
    (folder / "news.html").write_text(docfiles.html_page("Supplier audit", paragraphs))

    refused = herd.cli("submit", str(folder), "--job", "files", "--task", "qa", check=False)
    assert refused.returncode == 2
    assert f"{folder / 'locked.pdf'}: encrypted PDF: it needs a password" in refused.stderr
    assert db.execute("SELECT count(*) FROM prompts").fetchone() == (0,)

    herd.start_worker("small")
    done = herd.cli("submit", str(folder), "--job", "files", "--task", "qa", "--skip-unreadable")
    assert "added 3 new prompts" in done.stderr and "skipped" in done.stderr
    assert wait_for(db, "files") == {"done": 3}
    texts = dict(db.execute("SELECT doc_key, text FROM prompts").fetchall())
    assert set(texts) == {"set/report.pdf", "set/contract.docx", "set/news.html"}
    assert "Acme Supplies | 1200 EUR" in texts["set/contract.docx"]
    assert paragraphs[0] in texts["set/news.html"] and "Sign in" not in texts["set/news.html"]
    # The same files through another spelling of the folder: same keys, nothing added.
    again = herd.cli("submit", f"{folder}/", "--job", "files", "--task", "qa", "--skip-unreadable")
    assert "added 0 new prompts" in again.stderr

    status = herd.cli("status", "files").stdout
    assert "skipped 1 unreadable file(s):" in status and "locked.pdf: encrypted PDF" in status
    rows = [json.loads(line) for line in herd.cli("export", "files").stdout.splitlines()]
    assert len(rows) == 4
    assert rows[-1]["id"] == "set/locked.pdf" and rows[-1]["note"].startswith("skipped: ")


def test_fail_policy_names_both_token_counts_without_calling_the_model(
    make_herd, db, double, tmp_path
) -> None:
    double.script([], default={"text": "never", "first": CONFIDENT})
    double.set_contexts({"small": SMALL_CONTEXT})
    herd = make_herd(long_doc_herd(double))
    doc = twenty_thousand_words(tmp_path)
    herd.start_worker("small")
    herd.cli("submit", str(doc), "--job", "f", "--task", "sum_fail")
    assert wait_for(db, "f") == {"failed": 1}
    (error,) = db.execute("SELECT error FROM prompts").fetchone()
    assert "document is 2" in error and "tokens (counted), small takes 1" in error
    assert "(long_documents policy: fail)" in error
    assert not [c for c in double.calls() if c["model"] == "small"]  # refused before any call


def test_truncate_policy_keeps_head_and_tail_and_records_the_dropped_tokens(
    make_herd, db, double, tmp_path
) -> None:
    double.script([], default={"text": "a summary", "first": CONFIDENT})
    double.set_contexts({"small": SMALL_CONTEXT})
    herd = make_herd(long_doc_herd(double))
    doc = twenty_thousand_words(tmp_path)
    herd.start_worker("small")
    herd.cli("submit", str(doc), "--job", "t", "--task", "sum_truncate")
    assert wait_for(db, "t") == {"done": 1}
    dropped, prompt_tokens, model = db.execute(
        "SELECT dropped_tokens, prompt_tokens, model FROM attempts"
    ).fetchone()
    words = len(doc.read_text().split())
    assert model == "small" and prompt_tokens <= SMALL_CONTEXT - 64
    assert words - SMALL_CONTEXT < dropped < words - prompt_tokens + 40  # template words are not dropped
    (call,) = [c for c in double.calls() if c["model"] == "small"]
    words_in = doc.read_text().split()
    head, tail = call["prompt"].split("[...]")
    assert " ".join(words_in[:10]) in " ".join(head.split())  # the document's start...
    assert " ".join(tail.split()).endswith(" ".join(words_in[-10:]))  # ...and its end


def test_critique_and_refine_prompts_are_fitted_to_the_context_too(make_herd, db, double, tmp_path) -> None:
    """The critique and refine prompts carry the document again, plus the answer and the
    instruction, and the critique may write 256 tokens: each is cut to fit as the answer was, so no
    step meets the server's context error, and each records what it dropped."""
    double.script([], default={"text": "a summary", "first": CONFIDENT})
    double.set_contexts({"small": SMALL_CONTEXT})
    herd = make_herd(long_doc_herd(double, refine=True))
    doc = twenty_thousand_words(tmp_path)
    herd.start_worker("small")
    herd.cli("submit", str(doc), "--job", "t", "--task", "sum_truncate")
    assert wait_for(db, "t") == {"done": 1}
    rows = db.execute(
        "SELECT stage, status, error, dropped_tokens, prompt_tokens FROM attempts ORDER BY id"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(s, "ok", None) for s in ("answer", "critique", "refine")]
    words = len(doc.read_text().split())
    for stage, _, _, dropped, prompt_tokens in rows:
        max_new = 256 if stage == "critique" else 64
        assert prompt_tokens + max_new <= SMALL_CONTEXT, stage
        assert words - SMALL_CONTEXT < dropped < words, stage
    answer, critique, refine = rows
    assert critique[3] > answer[3]  # the answer and a longer generation leave less of the document
    calls = [c for c in double.calls() if c["model"] == "small"]
    assert len(calls) == 3 and all(c["status"] == 200 for c in calls)
    heads = [" ".join(c["prompt"].split("[...]")[0].split()[:10]) for c in calls]
    assert heads[0] == heads[1] == heads[2]  # each keeps the document's head (and tail: head_tail)


def test_chunk_policy_summarizes_chunks_then_their_summaries(make_herd, db, double, tmp_path) -> None:
    double.script(
        [{"model": "small", "match": "part summary", "text": "whole summary", "first": CONFIDENT}],
        default={"text": "part summary", "first": CONFIDENT},
    )
    double.set_contexts({"small": SMALL_CONTEXT})
    herd = make_herd(long_doc_herd(double))
    doc = twenty_thousand_words(tmp_path)
    herd.start_worker("small")
    herd.start_worker("small")  # chunks run in parallel across workers
    herd.cli("submit", str(doc), "--job", "c", "--task", "sum_chunk")
    assert wait_for(db, "c", timeout=120, documents_only=True) == {"done": 1}

    parent, answer = db.execute(
        "SELECT p.id, f.model || ':' || f.answer FROM prompts p JOIN finals f ON f.prompt_id = p.id "
        "WHERE p.parent_id IS NULL"
    ).fetchone()
    assert answer == "small:whole summary"
    chunks = db.execute(
        """SELECT c.chunk_index, c.state, count(a.id), sum(a.prompt_tokens), bool_and(a.busy_s > 0)
           FROM prompts c JOIN attempts a ON a.prompt_id = c.id
           WHERE c.parent_id = %s GROUP BY c.id ORDER BY c.chunk_index""",
        (parent,),
    ).fetchall()
    assert 14 <= len(chunks) <= 24
    assert [c[0] for c in chunks] == list(range(len(chunks)))
    assert all(
        state == "done" and attempts == 1 and tokens <= SMALL_CONTEXT - 64 and busy
        for _, state, attempts, tokens, busy in chunks
    )
    combine = db.execute(
        "SELECT stage, answer, prompt_tokens, busy_s > 0 FROM attempts WHERE prompt_id = %s", (parent,)
    ).fetchall()
    assert combine == [("combine", "whole summary", len(chunks) * 2 + 8, True)]  # 8: the chat template
    # The document's cost is the sum of its chunk attempts and its combine step.
    doc_cost = db.execute(
        "SELECT attempts, chunk_attempts, cost_usd FROM document_costs WHERE prompt_id = %s", (parent,)
    ).fetchone()
    total = db.execute("SELECT sum(cost_usd) FROM attempt_costs").fetchone()[0]
    assert doc_cost[:2] == (len(chunks) + 1, len(chunks)) and doc_cost[2] == total > Decimal(0)

    status = herd.cli("status", "c").stdout
    assert "done: 1" in status and f"{len(chunks)} chunk prompts" in status
    rows = [json.loads(line) for line in herd.cli("export", "c").stdout.splitlines()]
    assert [(r["id"], r["answer"]) for r in rows] == [("long/annual-report.txt", "whole summary")]


def zebra_doc(tmp_path: Path) -> Path:
    """The 20,000-word document with one sentence only one chunk holds."""
    doc = twenty_thousand_words(tmp_path)
    text = doc.read_text()
    doc.write_text(text[: len(text) // 2] + " The zebra clause. " + text[len(text) // 2 :])
    return doc


def test_classify_chunks_vote_by_confidence(make_herd, db, double, tmp_path) -> None:
    double.script(
        [
            {"model": "small", "match": "zebra", "text": "contract", "first": UNSURE},
            {"model": "small", "match": "", "text": "report", "first": CONFIDENT},
        ]
    )
    double.set_contexts({"small": SMALL_CONTEXT})
    herd = make_herd(long_doc_herd(double, small_context_in_file=True))
    doc = zebra_doc(tmp_path)
    herd.start_worker("small")
    herd.cli("submit", str(doc), "--job", "v", "--task", "classify_chunk")
    assert wait_for(db, "v", timeout=120, documents_only=True) == {"done": 1}
    # The vote goes to "report"; the chunks it rests on were all confident, so it is kept on small.
    combine = db.execute(
        "SELECT answer, escalated, first_token_margin, busy_s FROM attempts WHERE stage = 'combine'"
    ).fetchone()
    assert combine[:2] == ("report", False) and combine[2] > 0.9 and combine[3] == 0
    assert db.execute(
        "SELECT f.model, f.answer FROM finals f JOIN prompts p ON p.id = f.prompt_id "
        "WHERE p.parent_id IS NULL"
    ).fetchone() == ("small", "report")


def test_an_unsure_chunk_escalates_the_document_to_a_model_that_takes_it_whole(
    make_herd, db, double, tmp_path
) -> None:
    double.script(
        [
            {"model": "small", "match": "zebra", "text": "part summary", "first": UNSURE},
            {"model": "small", "match": "part summary", "text": "whole summary", "first": CONFIDENT},
            {"model": "small", "match": "", "text": "part summary", "first": CONFIDENT},
            {"model": "large", "match": "", "text": "large summary", "first": CONFIDENT},
        ]
    )
    double.set_contexts({"small": SMALL_CONTEXT, "large": 40000})
    herd = make_herd(long_doc_herd(double))
    doc = zebra_doc(tmp_path)
    herd.start_worker("small")
    herd.start_worker("large")
    herd.cli("submit", str(doc), "--job", "e", "--task", "sum_chunk")
    assert wait_for(db, "e", timeout=120, documents_only=True) == {"done": 1}
    steps = db.execute(
        """SELECT a.model, a.stage, a.escalated, round(a.first_token_margin::numeric, 2), a.prompt_tokens
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id WHERE p.parent_id IS NULL ORDER BY a.id"""
    ).fetchall()
    # small's combine rests on every chunk, the zebra one unsure: the document goes to large whole.
    assert [s[:4] for s in steps] == [
        ("small", "combine", True, Decimal("0.05")),
        ("large", "answer", False, Decimal("0.92")),
    ]
    assert steps[1][4] > 20_000  # the whole document, not chunks
    assert db.execute(
        "SELECT count(*) FROM prompts WHERE model = 'large' AND parent_id IS NOT NULL"
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT f.model, f.answer FROM finals f JOIN prompts p ON p.id = f.prompt_id "
        "WHERE p.parent_id IS NULL"
    ).fetchone() == ("large", "large summary")


def test_worker_killed_mid_way_through_a_chunked_document_ends_it_exactly_once(
    make_herd, db, double, tmp_path
) -> None:
    double.script(
        [{"model": "small", "match": "part summary", "text": "whole summary", "first": CONFIDENT}],
        default={"text": "part summary", "first": CONFIDENT, "delay": 0.6},
    )
    double.set_contexts({"small": SMALL_CONTEXT})
    herd = make_herd(long_doc_herd(double), HERD_VISIBILITY_TIMEOUT_S="3", HERD_STALE_AFTER_S="3")
    doc = twenty_thousand_words(tmp_path)
    victim = herd.start_worker("small")
    herd.cli("submit", str(doc), "--job", "k", "--task", "sum_chunk")
    deadline = time.monotonic() + 30
    while db.execute("SELECT count(*) FROM attempts").fetchone()[0] < 3:
        assert time.monotonic() < deadline, "no chunk was answered"
        time.sleep(0.05)
    herd.stop(victim, signal.SIGKILL)  # chunks in flight, none acked
    herd.start_worker("small")
    assert wait_for(db, "k", timeout=150, documents_only=True) == {"done": 1}

    per_chunk = db.execute(
        """SELECT c.chunk_index, count(a.id) FROM prompts c LEFT JOIN attempts a ON a.prompt_id = c.id
           WHERE c.parent_id IS NOT NULL GROUP BY c.id"""
    ).fetchall()
    assert per_chunk and all(n == 1 for _, n in per_chunk)  # every chunk answered once in the ledger
    assert db.execute("SELECT count(*) FROM attempts WHERE stage = 'combine'").fetchone() == (1,)
    assert db.execute(
        "SELECT count(*) FROM finals f JOIN prompts p ON p.id = f.prompt_id WHERE p.parent_id IS NULL"
    ).fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM prompts WHERE state NOT IN ('done')").fetchone() == (0,)

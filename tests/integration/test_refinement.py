"""Self-refinement: critique -> refine rounds on the same model, as separate tasks, each an attempt."""

from __future__ import annotations

import json

from tests.support.harness import herd_yaml, wait_for

CONFIDENT = [0.95, 0.03]
UNSURE = [0.40, 0.35]


def test_refinement_rounds_are_stored_then_the_refined_answer_decides(make_herd, db, double, tmp_path):
    # Rules match on the whole conversation; first match wins. Refine prompts carry the critique.
    feedback, review = "Feedback on your previous answer", "Review your previous answer"
    double.script([
        {"model": "small", "match": f"{feedback}:\nThe answer about Peru", "text": "Lima, I think",
         "first": UNSURE},
        {"model": "small", "match": feedback, "text": "better answer", "first": CONFIDENT},
        {"model": "small", "match": f"better answer\n{review}", "text": "NO ISSUES"},
        {"model": "small", "match": f"Lima, I think\n{review}", "text": "NO ISSUES"},
        {"model": "small", "match": f"Peru\ndraft\n{review}", "text": "The answer about Peru is vague."},
        {"model": "small", "match": review, "text": "The answer lacks detail."},
        {"model": "small", "match": "", "text": "draft", "first": CONFIDENT},
        {"model": "medium", "match": "", "text": "Lima", "first": CONFIDENT},
    ])  # fmt: skip
    text = herd_yaml(double).replace(
        "    escalation: {next: medium, measure: first_token_margin, threshold: 0.5}\n",
        "    escalation: {next: medium, measure: first_token_margin, threshold: 0.5}\n"
        "    refine: {rounds: 2, max_new_tokens: 64}\n",
        1,
    )
    herd = make_herd(text)
    docs = tmp_path / "r.jsonl"
    docs.write_text(
        json.dumps({"id": "gold", "text": "What is gold?"})
        + "\n"
        + json.dumps({"id": "peru", "text": "What is the capital of Peru"})
        + "\n"
    )
    herd.start_worker("small")
    herd.start_worker("medium")
    herd.cli("submit", str(docs), "--job", "ref", "--task", "qa")
    assert wait_for(db, "ref") == {"done": 2}

    steps = db.execute(
        """SELECT p.doc_key, a.model, a.stage, a.round, a.answer, a.escalated, a.busy_s IS NOT NULL,
                  a.gpu_count, a.usd_per_gpu_hour
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id ORDER BY p.doc_key, a.id"""
    ).fetchall()
    gold = [(m, st, r, ans, esc) for key, m, st, r, ans, esc, *_ in steps if key == "gold"]
    assert gold == [
        ("small", "answer", 0, "draft", False),
        ("small", "critique", 1, "The answer lacks detail.", False),
        ("small", "refine", 1, "better answer", False),
        ("small", "critique", 2, "NO ISSUES", False),  # stops early: no second refinement
    ]
    peru = [(m, st, r, ans, esc) for key, m, st, r, ans, esc, *_ in steps if key == "peru"]
    assert peru == [
        ("small", "answer", 0, "draft", False),
        ("small", "critique", 1, "The answer about Peru is vague.", False),
        ("small", "refine", 1, "Lima, I think", True),  # still unsure after refinement: escalates
        ("small", "critique", 2, "NO ISSUES", False),
        ("medium", "answer", 0, "Lima", False),
    ]
    # Every critique and refinement is charged to its prompt at the model's price.
    assert all(busy and count == 1 for *_, busy, count, _ in steps)
    finals = dict(
        db.execute(
            """SELECT p.doc_key, a.stage || ':' || a.round || ':' || f.answer
           FROM finals f JOIN prompts p ON p.id = f.prompt_id JOIN attempts a ON a.id = f.attempt_id"""
        ).fetchall()
    )
    assert finals == {"gold": "refine:1:better answer", "peru": "answer:0:Lima"}

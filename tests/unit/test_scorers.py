"""Quality scorers: hand-computed values, the MT-bench judge prompt and rating parsing, and `herd score`
end to end against the endpoint double (judge calls, stored rows, idempotent re-runs, failures)."""

from __future__ import annotations

import pytest

from herd.backends.base import (
    Generation,
    GenerationRequest,
    PermanentError,
    RetryableError,
    Timing,
)
from herd.herdfile.model import GenerationParams, ModelConfig, Retries, TaskConfig
from herd.quality.scorers import (
    JUDGE_SYSTEM,
    SCORERS,
    Item,
    Judge,
    JudgeError,
    correct,
    f1,
    judge_prompt,
    label_of,
    normalize,
    parse_rating,
    question_for,
    rating_score,
    tokens,
)
from herd.quality.scoring import plan

QA = TaskConfig(kind="qa")
SENTIMENT = TaskConfig(
    kind="classify",
    labels=["positive", "negative"],
    aliases={"positive": ["pos", "good"], "negative": ["neg", "négatif"]},
)


def score(name: str, answer: str, reference: str | None, task: TaskConfig = QA) -> tuple[float, str] | None:
    result = SCORERS[name].score(Item(task, "question", answer, reference))
    return None if result is None else (result.score, result.raw)


# --- normalization, exact match, token F1 ------------------------------------------------------


def test_normalize_folds_case_accents_punctuation_and_whitespace() -> None:
    assert normalize("  Bogotá. ") == "bogota"
    assert normalize("“São Paulo” — ¿no?") == "sao paulo no"
    assert normalize("Eiffel-Tower") == "eiffel tower"
    assert tokens("The Eiffel Tower") == ["eiffel", "tower"]
    assert tokens("An apple a day") == ["apple", "day"]


def test_exact_match_after_normalization() -> None:
    assert score("exact", "The Eiffel Tower!", "eiffel tower") == (1.0, "1")
    assert score("exact", "Bogota", "Bogotá") == (1.0, "1")
    assert score("exact", "Eiffel Tower in Paris", "Eiffel Tower") == (0.0, "0")
    assert score("exact", "Paris", None) is None


def test_token_f1_by_hand() -> None:
    # answer tokens [eiffel, tower] (article dropped); reference [eiffel, tower, in, paris]:
    # 2 in common -> precision 2/2, recall 2/4, F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    assert f1("the Eiffel Tower", "Eiffel tower in Paris") == pytest.approx((2 / 3, 1.0, 0.5))
    assert score("f1", "the Eiffel Tower", "Eiffel tower in Paris") == (
        pytest.approx(2 / 3),
        "P=1.000 R=0.500",
    )
    # Overlap counts multiplicity: [paris, paris, france] vs [paris] share 1 token -> P 1/3, R 1,
    # F1 = 2 * (1/3) * 1 / (4/3) = 1/2.
    assert f1("Paris, Paris, France", "Paris")[0] == pytest.approx(0.5)
    assert f1("Zürich", "zurich")[0] == 1.0
    assert f1("Lyon", "Paris")[0] == 0.0
    # Only articles on both sides: both empty, SQuAD counts that as agreement; one side empty does not.
    assert f1("the", "a")[0] == 1.0
    assert f1("the", "Paris")[0] == 0.0
    assert score("f1", "Paris", None) is None


# --- labels ------------------------------------------------------------------------------------


def test_label_accuracy_with_aliases_case_and_whitespace() -> None:
    assert score("label", "  POSITIVE.  ", "positive", SENTIMENT) == (1.0, "positive")
    assert score("label", "Good - I liked it", "Positive", SENTIMENT) == (1.0, "positive")
    # The reference may itself be spelled as an alias.
    assert score("label", "positive", " pos ", SENTIMENT) == (1.0, "positive")
    assert score("label", "Negatif", "negative", SENTIMENT) == (1.0, "negative")  # accent folded
    assert score("label", "negative", "positive", SENTIMENT) == (0.0, "negative")


def test_an_answer_naming_no_label_scores_zero() -> None:
    assert score("label", "I cannot tell.", "positive", SENTIMENT) == (0.0, "(no label)")
    assert score("label", "", "negative", SENTIMENT) == (0.0, "(no label)")


def test_label_cannot_score_without_a_known_reference_or_outside_classification() -> None:
    assert score("label", "positive", None, SENTIMENT) is None
    assert score("label", "positive", "neutral", SENTIMENT) is None
    assert score("label", "positive", "positive", QA) is None


def test_label_of_prefers_the_longest_spelling() -> None:
    task = TaskConfig(kind="classify", labels=["very", "very good"])
    assert label_of(task, "Very good, indeed") == "very good"
    assert label_of(task, "very") == "very"
    assert label_of(task, "verygood") is None


def test_correct_keeps_the_demo_semantics() -> None:
    assert correct(QA, "Paris, of course", "paris") is True
    assert correct(QA, "Lyon", "Paris") is False
    assert correct(QA, "Paris", None) is None
    assert correct(SENTIMENT, "good", "positive") is True
    # Neither side names a label: not a match.
    assert correct(SENTIMENT, "no idea", "neutral") is False


# --- the judge prompt and its rating --------------------------------------------------------------

SINGLE_V1 = (  # FastChat fastchat/llm_judge/data/judge_prompts.jsonl, "single-v1", verbatim
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your "
    "explanation, you must rate the response on a scale of 1 to 10 by strictly following this format: "
    '"[[rating]]", for example: "Rating: [[5]]".\n\n[Question]\nWhat is {x}?\n\n'
    "[The Start of Assistant's Answer]\nParis\n[The End of Assistant's Answer]"
)
SINGLE_MATH_V1 = (  # "single-math-v1", verbatim
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider correctness and "
    "helpfulness. You will be given a reference answer and the assistant's answer. Begin your evaluation by "
    "comparing the assistant's answer with the reference answer. Identify and correct any mistakes. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a scale of 1 to "
    '10 by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".\n\n'
    "[Question]\nWhat is {x}?\n\n[The Start of Reference Answer]\nParis\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\nParis\n[The End of Assistant's Answer]"
)


def test_judge_prompt_without_reference_is_mt_bench_single_v1() -> None:
    prompt = judge_prompt("chat", "What is {x}?", "Paris")  # braces in a document stay literal
    assert prompt.messages == (("system", "You are a helpful assistant."), ("user", SINGLE_V1))
    completion = judge_prompt("completion", "What is {x}?", "Paris")
    assert completion.mode == "completion" and completion.messages == ()
    assert completion.text == f"{JUDGE_SYSTEM}\n\n{SINGLE_V1}\n\n"


def test_judge_prompt_with_reference_is_single_math_v1() -> None:
    prompt = judge_prompt("chat", "What is {x}?", "Paris", reference="Paris")
    assert prompt.messages == (("system", "You are a helpful assistant."), ("user", SINGLE_MATH_V1))


def test_question_includes_the_task_instruction() -> None:
    assert question_for(QA, "Capital of France?") == "Capital of France?"
    task = TaskConfig(kind="qa", instruction="Answer in one word.")
    assert question_for(task, "Capital of France?") == "Answer in one word.\n\nCapital of France?"


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("The answer is fine. Rating: [[8]]", "8"),
        ('Format "Rating: [[5]]" noted. Rating: [[9]]', "9"),  # the last one counts
        ("Rating: [[7.5]]", "7.5"),
        ("Rating: [[ 6 ]]", "6"),
        ("[[1]]", "1"),
        ("[[10]]", "10"),
        ("Rating: [[0]]", None),
        ("Rating: [[11]]", None),
        ("[[8]] then, on reflection, [[12]]", None),
        ("Rating: 8", None),
        ('"[[rating]]"', None),
        ("", None),
    ],
)
def test_parse_rating(reply: str, rating: str | None) -> None:
    assert parse_rating(reply) == rating


def test_rating_maps_one_to_ten_onto_zero_to_one() -> None:
    assert rating_score("1") == 0.0
    assert rating_score("10") == 1.0
    assert rating_score("8") == pytest.approx(7 / 9)
    assert rating_score("7.5") == pytest.approx(6.5 / 9)


# --- the judge through a fake backend ----------------------------------------------------------


class FakeBackend:
    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Generation(reply, (), None, 0, "eos", Timing(0.01))


def judge(backend: FakeBackend, **config: object) -> tuple[Judge, list[float]]:
    cfg = ModelConfig.model_validate(
        {"protocol": "openai", "endpoints": ["http://judge/v1"], "retries": Retries(max=2), **config}
    )
    sleeps: list[float] = []
    return Judge("judgy", cfg, backend, sleep=sleeps.append), sleeps


def test_judge_calls_its_model_in_its_prompt_mode_with_a_larger_budget() -> None:
    backend = FakeBackend("Fine. Rating: [[8]]", "Rating: [[3]]")
    chat, _ = judge(backend)
    result = chat.rate("Capital of France?", "Paris", None)
    assert (result.score, result.raw, result.judge_model) == (pytest.approx(7 / 9), "8", "judgy")
    request = backend.requests[0]
    assert request.prompt.mode == "chat" and request.prompt.messages[0] == ("system", JUDGE_SYSTEM)
    assert (request.max_new_tokens, request.temperature, request.stop) == (256, 0.0, ())
    base, _ = judge(backend, prompt_mode="completion", generation=GenerationParams(max_new_tokens=512))
    base.rate("Capital of France?", "Lyon", "Paris")
    request = backend.requests[1]
    assert (
        request.prompt.mode == "completion"
        and "[The Start of Reference Answer]\nParis" in request.prompt.text
    )
    assert request.max_new_tokens == 512  # never below the model's own default


def test_judge_retries_retryable_errors_then_gives_up() -> None:
    flaky, sleeps = judge(FakeBackend(RetryableError("503"), RetryableError("429"), "[[10]]"))
    assert flaky.rate("q", "a", None).score == 1.0
    assert len(sleeps) == 2
    down, _ = judge(FakeBackend(*(RetryableError("503") for _ in range(3))))
    with pytest.raises(JudgeError, match="gave up after 3 tries"):
        down.rate("q", "a", None)


def test_judge_failures_permanent_error_and_garbage() -> None:
    rejected, sleeps = judge(FakeBackend(PermanentError("HTTP 422")))
    with pytest.raises(JudgeError, match="422"):
        rejected.rate("q", "a", None)
    assert sleeps == []
    rambling, _ = judge(FakeBackend("I would rather not say."))
    with pytest.raises(JudgeError, match="no \\[\\[rating\\]\\]"):
        rambling.rate("q", "a", None)


def test_auto_plan_per_task_kind() -> None:
    summarize = TaskConfig(kind="summarize")
    assert plan(SENTIMENT, "positive", "auto", has_judge=True) == ("label",)
    assert plan(QA, "Paris", "auto", has_judge=True) == ("f1", "exact")
    assert plan(QA, None, "auto", has_judge=True) == ("judge",)
    assert plan(QA, None, "auto", has_judge=False) == ()
    assert plan(summarize, "a summary", "auto", has_judge=True) == ("judge",)
    assert plan(summarize, "a summary", "auto", has_judge=False) == ("f1", "exact")
    assert plan(QA, None, "exact", has_judge=False) == ("exact",)


# --- `herd score` end to end: CLI, Postgres, the endpoint double as judge -----------------------

JUDGE_RULE = {"model": "large", "match": "[Instruction]", "text": "The answer is fine. Rating: [[8]]"}


def add_prompt(db, job_id: int, key: str, text: str, reference: str | None) -> int:  # type: ignore[no-untyped-def]
    return db.execute(
        """INSERT INTO prompts (job_id, doc_key, text, reference, content_hash, state, model)
           VALUES (%s, %s, %s, %s, %s, 'done', 'small') RETURNING id""",
        (job_id, key, text, reference, key),
    ).fetchone()[0]


def add_attempt(db, prompt_id: int, stage: str, round_: int, answer: str | None, status: str = "ok") -> int:  # type: ignore[no-untyped-def]
    return db.execute(
        """INSERT INTO attempts (prompt_id, model, stage, round, status, answer)
           VALUES (%s, 'small', %s, %s, %s, %s) RETURNING id""",
        (prompt_id, stage, round_, status, answer),
    ).fetchone()[0]


def graded_job(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Two qa prompts: one with a reference, answered, critiqued and refined; one without a reference."""
    job = db.execute(
        "INSERT INTO jobs (name, task, entry_model) VALUES ('graded', 'qa', 'small') RETURNING id"
    )
    job_id = job.fetchone()[0]
    france = add_prompt(db, job_id, "france", "What is the capital of France?", "Paris")
    hamlet = add_prompt(db, job_id, "hamlet", "Who wrote Hamlet?", None)
    return {
        "france-answer": add_attempt(db, france, "answer", 0, "Paris."),
        "france-critique": add_attempt(db, france, "critique", 1, "NO ISSUES"),
        "france-refine": add_attempt(db, france, "refine", 1, "The capital is Paris"),
        "france-error": add_attempt(db, france, "answer", 9, None, status="error"),
        "hamlet-answer": add_attempt(db, hamlet, "answer", 0, "Shakespeare"),
        "job": job_id,
    }


def stored(db) -> dict[tuple[int, str], tuple[float, str, str | None]]:  # type: ignore[no-untyped-def]
    rows = db.execute("SELECT attempt_id, scorer, score, raw, judge_model FROM scores").fetchall()
    return {(a, s): (score, raw, judge) for a, s, score, raw, judge in rows}


def judge_calls(double, model: str = "large") -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return [c for c in double.calls() if c["model"] == model]


def test_herd_score_judge_stores_ratings_once(make_herd, db, double) -> None:  # type: ignore[no-untyped-def]
    ids = graded_job(db)
    # The first judge call about Hamlet meets a 503: retried with backoff, then rated.
    double.script([{**JUDGE_RULE, "match": "Hamlet", "errors": [503]}, JUDGE_RULE])
    herd = make_herd()

    out = herd.cli("score", "graded", "--scorer", "judge", "--judge", "large")
    assert "scores written: judge: 3" in out.stdout and "judge failures: 0" in out.stdout
    rows = stored(db)
    answers = ("france-answer", "france-refine", "hamlet-answer")  # critique and error are not answers
    assert set(rows) == {(ids[k], "judge") for k in answers}
    for key in answers:
        assert rows[(ids[key], "judge")] == (pytest.approx(7 / 9), "8", "large")
    calls = judge_calls(double)
    assert len(calls) == 4 and [c["status"] for c in calls].count(503) == 1
    # large runs in completion mode: one text prompt; with a reference, the single-math-v1 variant.
    france = [str(c["prompt"]) for c in calls if "France" in str(c["prompt"])]
    assert len(france) == 2 and all(
        p.startswith("You are a helpful assistant.\n\n[Instruction]") for p in france
    )
    assert all("[The Start of Reference Answer]\nParis\n[The End of Reference Answer]" in p for p in france)
    assert "[The Start of Assistant's Answer]\nThe capital is Paris\n" in "".join(france)
    hamlet = [str(c["prompt"]) for c in calls if "Hamlet" in str(c["prompt"])]
    assert hamlet and all("Reference Answer" not in p for p in hamlet)

    again = herd.cli("score", "graded", "--scorer", "judge", "--judge", "large")
    assert "already scored: 3" in again.stdout and "scores written: none" in again.stdout
    assert len(judge_calls(double)) == 4 and stored(db) == rows  # nothing added, no judge called

    # auto without a judge: token F1 and exact match where there is a reference, the rest skipped.
    auto = herd.cli("score", "graded", "--scorer", "auto")
    assert "exact: 2, f1: 2" in auto.stdout and "skipped (nothing to score with): 1" in auto.stdout
    rows = stored(db)
    assert rows[(ids["france-answer"], "exact")] == (1.0, "1", None)
    assert rows[(ids["france-refine"], "exact")] == (0.0, "0", None)
    # [capital, is, paris] vs [paris]: P 1/3, R 1, F1 1/2.
    assert rows[(ids["france-refine"], "f1")] == (pytest.approx(0.5), "P=0.333 R=1.000", None)
    assert len(rows) == 7
    # auto with the judge: every answer already has what auto would give it.
    herd.cli("score", "graded", "--judge", "large")
    assert len(judge_calls(double)) == 4 and len(stored(db)) == 7

    # --rescore replaces the judge rows in place (ON CONFLICT DO UPDATE), here with the chat model.
    double.script([{**JUDGE_RULE, "model": "small", "text": "Mostly right. Rating: [[7.5]]"}])
    herd.cli("score", "graded", "--scorer", "judge", "--judge", "small", "--rescore")
    rows = stored(db)
    assert len(rows) == 7
    assert rows[(ids["hamlet-answer"], "judge")] == (pytest.approx(6.5 / 9), "7.5", "small")
    chat = judge_calls(double, "small")
    assert len(chat) == 3 and all(
        str(c["prompt"]).startswith("You are a helpful assistant.\n[Instruction]") for c in chat
    )


def test_herd_score_counts_a_garbage_rating_as_a_failure(make_herd, db, double) -> None:  # type: ignore[no-untyped-def]
    ids = graded_job(db)
    double.script([{**JUDGE_RULE, "match": "Hamlet", "text": "Hard to say; it depends."}, JUDGE_RULE])
    herd = make_herd()
    out = herd.cli("score", "graded", "--scorer", "judge", "--judge", "large")
    assert "scores written: judge: 2" in out.stdout and "judge failures: 1" in out.stdout
    assert "judge failure: large: no [[rating]]" in out.stderr
    assert (ids["hamlet-answer"], "judge") not in stored(db) and len(stored(db)) == 2
    # The failure left nothing behind, so the next run asks again (and only about Hamlet).
    before = len(judge_calls(double))
    herd.cli("score", "graded", "--scorer", "judge", "--judge", "large")
    assert len(judge_calls(double)) == before + 1


def test_herd_score_rejects_unknown_judge_and_job(make_herd, db, double) -> None:  # type: ignore[no-untyped-def]
    graded_job(db)
    herd = make_herd()
    bad = herd.cli("score", "graded", "--judge", "huge", check=False)
    assert bad.returncode == 2 and "unknown judge model 'huge'" in bad.stderr
    assert "small, medium, large" in bad.stderr
    missing = herd.cli("score", "graded", "--scorer", "judge", check=False)
    assert missing.returncode == 2 and "--scorer judge needs --judge MODEL" in missing.stderr
    nojob = herd.cli("score", "nightly", check=False)
    assert nojob.returncode == 2 and "no job named 'nightly'" in nojob.stderr
    assert double.calls() == []

"""Quality scorers: how good is an answer? Each returns a score in [0, 1] and the raw value it read.

`exact`, `f1` and `label` compare with the document's reference (SQuAD-style normalization);
`judge` asks a herd model to rate the answer 1-10 in the style of MT-bench single-answer grading
(Zheng et al. 2023, lm-sys/FastChat fastchat/llm_judge/data/judge_prompts.jsonl). A scorer returns
None when it cannot score (no reference, not a classification task); a judge that fails raises
JudgeError, so the caller can count failures apart from what was never scorable.
"""

from __future__ import annotations

import itertools
import re
import string
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from herd.backends.base import Backend, BackendError, GenerationRequest, Prompt, RetryableError
from herd.errors import ServiceError
from herd.herdfile.model import ModelConfig, PromptMode, TaskConfig

_ASCII_PUNCT = frozenset(string.punctuation)
ARTICLES = frozenset({"a", "an", "the"})


def _is_punct(ch: str) -> bool:
    # string.punctuation alone misses typographic quotes, dashes and '¿' that models often produce.
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """Casefolded, accents and punctuation dropped, whitespace folded: 'Bogotá.' == ' bogota'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    # Punctuation becomes a space (not deleted as in SQuAD), so 'Eiffel-Tower' == 'Eiffel Tower'.
    return " ".join("".join(" " if _is_punct(ch) else ch for ch in folded).split())


def tokens(text: str) -> list[str]:
    """SQuAD's answer tokens: the normalized words without the articles a/an/the."""
    return [word for word in normalize(text).split() if word not in ARTICLES]


def label_of(task: TaskConfig, answer: str) -> str | None:
    """The label an answer names: its first word(s) matching a label or one of the label's aliases.
    The longest matching spelling wins, so an alias 'very positive' beats a label 'very'."""
    said = normalize(answer)
    best: tuple[int, str] | None = None
    for label in task.labels:
        for spelling in (label, *task.aliases.get(label, [])):
            wanted = normalize(spelling)
            if wanted and (said == wanted or said.startswith(wanted + " ")):
                if best is None or len(wanted) > best[0]:
                    best = (len(wanted), label)
    return best[1] if best else None


def reference_label(task: TaskConfig, reference: str) -> str | None:
    """The label a reference names, spelled as a label or an alias (whole text only)."""
    wanted = normalize(reference)
    for label in task.labels:
        if any(normalize(s) == wanted for s in (label, *task.aliases.get(label, []))):
            return label
    return None


def correct(task: TaskConfig, answer: str | None, reference: str | None) -> bool | None:
    """True/False against the reference; None when there is nothing to compare with."""
    if reference is None or answer is None:
        return None
    if task.kind == "classify":
        wanted = reference_label(task, reference)
        return wanted is not None and label_of(task, answer) == wanted
    said, wanted_text = normalize(answer), normalize(reference)
    return said == wanted_text or said.startswith(wanted_text + " ")


def agree(task: TaskConfig, answer: str, other: str) -> bool:
    """Whether two answers say the same: the same label for a classify task (neither unlabelled),
    else the same text after normalization (case, accents, punctuation, spaces)."""
    if task.kind == "classify":
        mine = label_of(task, answer)
        return mine is not None and mine == label_of(task, other)
    return normalize(answer) == normalize(other)


def f1(answer: str, reference: str) -> tuple[float, float, float]:
    """SQuAD token F1 with its precision and recall: overlap counted with multiplicity."""
    said, wanted = tokens(answer), tokens(reference)
    if not said or not wanted:
        same = float(said == wanted)  # as SQuAD v2: two empty answers agree, one empty does not
        return same, same, same
    common = sum((Counter(said) & Counter(wanted)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(said), common / len(wanted)
    return 2 * precision * recall / (precision + recall), precision, recall


# --- LLM-as-judge (MT-bench `single-v1`, and `single-math-v1` when there is a reference) ---------

JUDGE_SYSTEM = "You are a helpful assistant."
_JUDGE_INTRO = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by "
    "an AI assistant to the user question displayed below. "
)
_JUDGE_RATE = (
    "Be as objective as possible. After providing your explanation, you must rate the response on a "
    'scale of 1 to 10 by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".'
)
JUDGE_SINGLE = (
    _JUDGE_INTRO + "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, "
    "depth, creativity, and level of detail of the response. Begin your evaluation by providing a short "
    "explanation. " + _JUDGE_RATE + "\n\n[Question]\n{question}\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
JUDGE_REFERENCE = (
    _JUDGE_INTRO + "Your evaluation should consider correctness and helpfulness. You will be given a "
    "reference answer and the assistant's answer. Begin your evaluation by comparing the assistant's "
    "answer with the reference answer. Identify and correct any mistakes. " + _JUDGE_RATE + "\n\n"
    "[Question]\n{question}\n\n[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]"
    "\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
JUDGE_MAX_NEW_TOKENS = 256  # an explanation, then the rating: far beyond a short answer's budget
# The last [[n]] counts: a judge may quote the format ("Rating: [[5]]") before giving its own.
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


class JudgeError(ServiceError):
    """The judge gave no usable rating (unparseable reply, permanent error, retries spent)."""


def question_for(task: TaskConfig, text: str) -> str:
    """What the judge is told was asked: the document, after the task's instruction when it has one."""
    return f"{task.instruction.strip()}\n\n{text}" if task.instruction else text


def judge_prompt(mode: PromptMode, question: str, answer: str, reference: str | None = None) -> Prompt:
    template = JUDGE_SINGLE if reference is None else JUDGE_REFERENCE
    # str.format does not re-scan substituted values, so braces in documents are safe.
    user = template.format(question=question, answer=answer, reference=reference)
    if mode == "chat":
        return Prompt(mode="chat", messages=(("system", JUDGE_SYSTEM), ("user", user)))
    return Prompt(mode="completion", text=f"{JUDGE_SYSTEM}\n\n{user}\n\n")


def parse_rating(reply: str) -> str | None:
    """The last `[[n]]` (or `[[n.5]]`) with 1 <= n <= 10, as written; None when there is none."""
    found = _RATING.findall(reply)
    if not found or not 1 <= float(found[-1]) <= 10:
        return None
    return str(found[-1])


def rating_score(rating: str) -> float:
    return (float(rating) - 1) / 9


class Judge:
    """A herd model that rates answers, called through Herd's backend in the model's prompt mode."""

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        backend: Backend | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if backend is None:
            from herd.backends.registry import make_backend  # noqa: PLC0415 - the HTTP stack only when a judge is used

            backend = make_backend(name, config)
        self.name, self.config, self.backend, self._sleep = name, config, backend, sleep
        self.max_in_flight = config.max_in_flight

    def rate(self, question: str, answer: str, reference: str | None) -> Score:
        params = self.config.generation
        request = GenerationRequest(
            prompt=judge_prompt(self.config.prompt_mode, question, answer, reference),
            max_new_tokens=max(JUDGE_MAX_NEW_TOKENS, params.max_new_tokens),
            # No stop sequences: a task's stops (often a newline) would cut the explanation short.
            temperature=0.0,
            top_logprobs=params.top_logprobs,
        )
        reply = self._generate(request)
        rating = parse_rating(reply)
        if rating is None:
            raise JudgeError(f"{self.name}: no [[rating]] from 1 to 10 in {reply[-200:]!r}")
        return Score(rating_score(rating), rating, judge_model=self.name)

    def _generate(self, request: GenerationRequest) -> str:
        policy = self.config.retries
        for tries in itertools.count():
            try:
                return self.backend.generate(request).text
            except RetryableError as exc:
                if tries >= policy.max:
                    raise JudgeError(f"{self.name}: gave up after {tries + 1} tries: {exc}") from exc
                # Full jitter, as the workers do: many judge threads must not retry in lockstep.
                self._sleep(policy.delay_s(tries))
            except BackendError as exc:
                raise JudgeError(f"{self.name}: {exc}") from exc
        raise AssertionError("unreachable")


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One answer to score, with what it answered."""

    task: TaskConfig
    question: str
    answer: str
    reference: str | None = None


@dataclass(frozen=True)
class Score:
    score: float  # in [0, 1]
    raw: str  # what the scorer read: a judge's rating as written, a label, precision/recall
    judge_model: str | None = None


class Scorer(Protocol):
    needs_judge: bool

    def score(self, item: Item, judge: Judge | None = None) -> Score | None: ...


class ExactMatch:
    needs_judge = False

    def score(self, item: Item, judge: Judge | None = None) -> Score | None:
        if item.reference is None:
            return None
        same = tokens(item.answer) == tokens(item.reference)
        return Score(float(same), "1" if same else "0")


class TokenF1:
    needs_judge = False

    def score(self, item: Item, judge: Judge | None = None) -> Score | None:
        if item.reference is None:
            return None
        value, precision, recall = f1(item.answer, item.reference)
        return Score(value, f"P={precision:.3f} R={recall:.3f}")


class LabelAccuracy:
    needs_judge = False

    def score(self, item: Item, judge: Judge | None = None) -> Score | None:
        if item.task.kind != "classify" or item.reference is None:
            return None
        wanted = reference_label(item.task, item.reference)
        if wanted is None:
            return None  # a reference outside the label set cannot be compared with
        said = label_of(item.task, item.answer)
        return Score(float(said == wanted), said if said is not None else "(no label)")


class LlmJudge:
    needs_judge = True

    def score(self, item: Item, judge: Judge | None = None) -> Score | None:
        if judge is None:
            return None
        return judge.rate(item.question, item.answer, item.reference)


SCORERS: dict[str, Scorer] = {
    "exact": ExactMatch(),
    "f1": TokenF1(),
    "label": LabelAccuracy(),
    "judge": LlmJudge(),
}

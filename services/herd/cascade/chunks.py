"""Documents longer than a model's context: the task's `long_documents` policy (docs/documents.md).

The pipeline (herd/cascade/pipeline.py) calls one handler per stage (`answer`, `followup` for critique
and refine, `waiting` for the chunks, `combine`), passing a connection factory and a `call` for the
model, never itself; nothing here runs for a task without a policy. The SQL is in
herd/ledger/chunks.py. Before a document's `answer` step on model M, `fit` counts its tokens against
M's budget (the context minus the rendered template, `max_new_tokens` and `margin_tokens`;
herd/backends/context.py) and says what to do:

- it fits (or M's context is unknown): nothing;
- `fail`: the attempt is recorded as an error naming both token counts, without calling M;
- `truncate`: the attempt runs on the head (or head and tail) that fits; `attempts.dropped_tokens`;
- `chunk`: `split` makes each chunk a prompt of its own (`prompts.parent_id`, `chunk_index`; the
  marker `fields._chunk` tells the pipeline without another query), all queued on M at once so they
  run in parallel across M's workers; the document's prompt waits at stage `chunks`.

A chunk is an ordinary prompt on M: its attempts, refinement and idempotency are the pipeline's.
Refinement's critique and refine steps send the document again with the answer, the critique
instruction (and the critique) after it, and the critique may generate more tokens than the answer:
`fit_followup` counts that whole prompt against M's context and, over it, cuts the document (or the
chunk) as `truncate` does, by the policy's `keep` (`fail`: the step is refused, naming the counts).
It never escalates on its own and frees no dispatch-window slot (its document holds one). When a
chunk finishes (done or failed), `chunk_finished` runs in the same transaction: under a lock on the
document's row it counts the chunks still open, and the last one moves the document to stage
`combine` and dispatches it. The lock serializes the chunks' ends, so whichever commits last sees
all the others finished and exactly one moves the document on; a redelivered chunk, or the stale
sweep re-sending the waiting document (`waiting`), finds it moved already and does nothing.

The `combine` step is an attempt of its own on M (`attempts.stage = 'combine'`), recorded and decided
by the pipeline like an answer: final, or escalate the whole document to the next model, which takes
it whole if it fits its context and chunks it again if not. How chunk answers combine, by task kind:

- summarize: summaries of summaries, the chunk summaries in order through the task's own template
  (one model call, charged like any other; head and tail kept if even they do not fit);
- extract: field merge, each field from the most confident chunk that gives it a value;
- classify: confidence-weighted vote (the rule's measure oriented as a confidence, shifted to be
  positive); ties go to the label seen first;
- qa: the best-supported answer, the one most chunks give (ignoring "not found"-like answers),
  ties by summed confidence;
- template: the chunk answers joined in order.

Uncertainty: the document's measures are those of the least confident chunk among those whose
answers the combined answer rests on (the supporting chunks: all of them, plus the combine call
itself, for summarize), so an answer is kept only if every part it rests on was confident. If any
chunk failed, the document fails naming the chunk. Cost: every chunk attempt is in the ledger with
its own cost; the `document_costs` view (migration 0007) sums them with the combine step's.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import psycopg

from herd.backends.base import BackendError, GenerationRequest, PermanentError, Prompt
from herd.backends.context import ContextInfo
from herd.cascade import splitting
from herd.cascade.prompts import RenderError, render
from herd.herdfile.model import HerdConfig, LongDocuments, ModelConfig, TaskTier
from herd.ledger import chunks as ledger
from herd.ledger.chunks import CHUNKS, COMBINE, MARK, MEASURES, Part
from herd.ledger.decisions import Outcome
from herd.ledger.steps import NewAttempt, PromptRow
from herd.policy.active import Rule
from herd.vocabulary import AttemptStatus, Dispatch, OutcomeKind, Stage, StepKey

log = logging.getLogger(__name__)

__all__ = ["CHUNKS", "COMBINE", "MARK", "Fit", "LongDocumentPolicy", "Part", "is_chunk", "needed", "refused"]

SAFETY = 0.9  # chunk sizes are set by a characters-per-token ratio: keep 10% in hand
# One model call on a prompt (its text replaced), recorded as the attempt of the step; with an error,
# no call: the error is recorded as the attempt (a `fail` policy's refusal).
Call = Callable[[PromptRow, BackendError | None], NewAttempt]
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
_NOT_FOUND = re.compile(
    r"^(n/?a|none|unknown|not (found|mentioned|stated|given)|no answer|i don'?t know)\b", re.I
)


def needed(herd: HerdConfig) -> bool:
    """Whether any task has a long-document policy (else the pipeline skips every hook)."""
    return any(task.long_documents is not None for task in herd.tasks.values())


def is_chunk(prompt: PromptRow) -> bool:
    return MARK in prompt.fields


@dataclass(frozen=True)
class Fit:
    """What `fit` decided for one document on one model. `text` is what the model gets."""

    text: str
    dropped_tokens: int | None = None  # truncate: tokens left out
    refuse: str | None = None  # fail: the reason, recorded as the attempt's error
    chunks: tuple[str, ...] = ()  # chunk: the pieces


class LongDocumentPolicy:
    """Per worker process (the pipeline holds one): the policies' hooks, with cached context sizes."""

    def __init__(self, herd: HerdConfig, context: ContextInfo | None = None) -> None:
        self.herd = herd
        self.context = context or ContextInfo(herd)
        # (model, rendered empty template) -> its tokens: the same for every document of a task.
        self._overhead: dict[tuple[str, str], int] = {}

    # -- the stages' handlers: each gets what it needs, never the pipeline --------------------

    def answer(
        self, connect: Connect, prompt: PromptRow, step: TaskTier, key: StepKey, call: Call
    ) -> Outcome | NewAttempt:
        """The `answer` step of a document on `step.model`: its chunks made and queued (an Outcome), or
        the attempt on the document as it is, cut to fit, or refused (`fit`)."""
        fit = self.fit(prompt, step)
        if fit is None:
            return call(prompt, None)
        if fit.chunks:
            return self.split(connect, prompt, key, fit.chunks)
        return _run(prompt, fit, call)

    def followup(
        self, prompt: PromptRow, step: TaskTier, request_for: Callable[[str], GenerationRequest], call: Call
    ) -> NewAttempt:
        """A critique or refine step: the attempt on the document as it is, or cut to fit with its
        answer and instruction, or refused (`fit_followup`)."""
        fit = self.fit_followup(prompt, step, request_for)
        return call(prompt, None) if fit is None else _run(prompt, fit, call)

    # -- before an answer step ---------------------------------------------------------------

    def fit(self, prompt: PromptRow, step: TaskTier) -> Fit | None:
        """None: go on as usual (no policy, a chunk, a window nobody knows, or the document fits)."""
        policy = self.herd.tasks[prompt.task].long_documents
        if policy is None or is_chunk(prompt):
            return None  # a chunk was cut to fit: no second count
        budget = self.budget(prompt, step, policy)
        if budget is None:
            return None
        return self._over(prompt.text, step.model, budget, policy, chunking=policy.policy == "chunk")

    def fit_followup(
        self, prompt: PromptRow, step: TaskTier, request_for: Callable[[str], GenerationRequest]
    ) -> Fit | None:
        """Before a critique or refine step on `step.model` (a document's or a chunk's): the request
        `request_for(text)` renders for a document text carries the answer, the instruction and (refine)
        the critique too, and its own `max_new_tokens`. None: no policy, an unknown window, or it fits.
        Over the budget the text is cut as `truncate` does (by `keep`; for `truncate` and `chunk`),
        `dropped_tokens` telling how much; `fail` refuses the step with both counts."""
        policy = self.herd.tasks[prompt.task].long_documents
        if policy is None:
            return None
        window = self.context.window(step.model)
        if window is None:
            return None
        try:
            empty = request_for("")
        except RenderError:
            return None  # the pipeline records the render error as usual
        overhead = self.context.count(step.model, _prompt_text(empty.prompt)).tokens
        budget = window.input_budget(empty.max_new_tokens) - overhead - policy.margin_tokens
        return self._over(prompt.text, step.model, budget, policy, chunking=False, after=" with its answer")

    def _over(
        self, text: str, model: str, budget: int, policy: LongDocuments, *, chunking: bool, after: str = ""
    ) -> Fit | None:
        """What to do with `text` against `budget` tokens on `model`: None when it fits, else refuse
        (`fail`, or no room), chunks (`chunking`) or the cut text with the tokens it dropped."""
        count = self.context.count(model, text)
        if count.tokens <= budget:
            return None
        how = "counted" if count.exact else "estimated"
        if budget < 16:
            return Fit(text, refuse=f"{model}'s context leaves no room for a document{after}")
        if policy.policy == "fail":
            return Fit(
                text,
                refuse=f"document is {count.tokens} tokens ({how}), {model} takes {budget}{after} "
                "(long_documents policy: fail)",
            )
        chars_per_token = len(text) / count.tokens
        max_chars = max(1, int(budget * chars_per_token * SAFETY))
        if not chunking:
            cut = splitting.head(text, max_chars)
            if policy.keep == "head_tail":
                cut = splitting.head_tail(text, max_chars)
            kept = self.context.count(model, cut).tokens
            return Fit(cut, dropped_tokens=max(count.tokens - kept, 0))
        overlap = int(policy.overlap_tokens * chars_per_token)
        pieces = splitting.chunk(text, max_chars, overlap)
        if len(pieces) > policy.max_chunks:
            return Fit(
                text,
                refuse=f"document is {count.tokens} tokens ({how}): {len(pieces)} chunks for {model}, "
                f"more than long_documents.max_chunks = {policy.max_chunks}",
            )
        return Fit(text, chunks=tuple(pieces))

    def budget(self, prompt: PromptRow, step: TaskTier, policy: LongDocuments) -> int | None:
        """Tokens the document may take on `step.model`: None when its context is unknown."""
        window = self.context.window(step.model)
        if window is None:
            return None
        config = self.herd.models[step.model]
        try:
            empty = render(self.herd.tasks[prompt.task], step.prompt_mode, "", prompt.fields)
        except RenderError:
            return None  # the pipeline records the render error as usual
        template = _prompt_text(empty)
        if (step.model, template) not in self._overhead:
            self._overhead[step.model, template] = (
                self.context.count(step.model, template).tokens if template else 0
            )
        overhead = self._overhead[step.model, template]
        return window.input_budget(config.generation.max_new_tokens) - overhead - policy.margin_tokens

    # -- chunk: fan out ----------------------------------------------------------------------

    def split(self, connect: Connect, prompt: PromptRow, key: StepKey, pieces: tuple[str, ...]) -> Outcome:
        """Make the chunk prompts and queue them, and park the document at stage `chunks`, in one
        transaction; only if the document is still at `key` (else a duplicate delivery did it)."""
        with connect() as conn, conn.transaction():
            children = ledger.split(conn, prompt, key, pieces)
        if children is None:
            return Outcome(OutcomeKind.SKIPPED)
        log.info("prompt %s: %d chunks on %s", prompt.id, len(pieces), key.model)
        dispatches: tuple[Dispatch, ...] = tuple((c, key.model, Stage.ANSWER, 0) for c in children)
        return Outcome(OutcomeKind.CHUNKED, dispatches)

    # -- chunk: the last one moves the document on ------------------------------------------

    def chunk_finished(self, conn: psycopg.Connection, chunk: PromptRow) -> tuple[Dispatch, ...]:
        """In the transaction that finished `chunk`: if no chunk of its document on this model is
        still open, move the document to `combine` and return its dispatch (see the module docstring)."""
        return ledger.advance_document(conn, int(chunk.fields[MARK]["parent"]), chunk.model)

    def waiting(self, connect: Connect, prompt: PromptRow, key: StepKey) -> Outcome:
        """The document's message at stage `chunks` (the stale sweep re-sends it while chunks run):
        move it on if its chunks are all finished, else nothing."""
        with connect() as conn, conn.transaction():
            moved = ledger.advance_document(conn, prompt.id, key.model)
        return Outcome(OutcomeKind.REFINING if moved else OutcomeKind.SKIPPED, moved)

    # -- combine ----------------------------------------------------------------------------

    def combine(
        self,
        prompt: PromptRow,
        step: TaskTier,
        rule: Rule,
        key: StepKey,
        retries: int,
        parts: list[Part],
        call: Call,
    ) -> NewAttempt:
        """The `combine` attempt of a chunked document on `key.model` from its chunks' `parts`
        (`herd.ledger.chunks.parts`); `call` makes a summarize task's model call (module docstring)."""
        config = self.herd.models[key.model]
        # No call: timestamped by the database at insert (one clock: herd/ledger/steps.py).
        base = NewAttempt(
            prompt_id=prompt.id,
            model=key.model,
            stage=COMBINE,
            round=0,
            status=AttemptStatus.ERROR,
            retries=retries,
            gpu_count=config.gpus.count,
            usd_per_gpu_hour=_price(config),
        )
        failed = [p for p in parts if p.answer is None]
        if not parts or failed:
            which = failed[0] if failed else None
            reason = (
                f"chunk {which.index + 1} of {len(parts)} failed: {which.error}" if which else "no chunks"
            )
            return replace(base, error=reason)
        kind = self.herd.tasks[prompt.task].kind
        confidence = _confidence(rule)
        if kind == "summarize":
            return self._summaries(prompt, step, rule, key, parts, base, confidence, call)
        answer, support = _merge(kind, self.herd.tasks[prompt.task].fields, parts, confidence)
        # Computed, not generated: no endpoint was held, so it costs nothing (busy 0 s).
        combined = replace(base, status=AttemptStatus.OK, answer=answer, busy_s=0.0, latency_s=0.0)
        return _with_uncertainty(combined, support, rule, confidence)

    def _summaries(
        self,
        prompt: PromptRow,
        step: TaskTier,
        rule: Rule,
        key: StepKey,
        parts: list[Part],
        base: NewAttempt,
        confidence: Callable[[Part | NewAttempt], float],
        call: Call,
    ) -> NewAttempt:
        joined = "\n\n".join(p.answer or "" for p in parts)
        policy = self.herd.tasks[prompt.task].long_documents
        dropped = None
        if policy is not None:
            budget = self.budget(prompt, step, policy)
            count = self.context.count(key.model, joined)
            if budget is not None and count.tokens > budget:
                joined = splitting.head_tail(
                    joined, max(1, int(budget * len(joined) / count.tokens * SAFETY))
                )
                dropped = count.tokens - self.context.count(key.model, joined).tokens
        attempt = call(replace(prompt, text=joined), None)
        attempt = replace(attempt, stage=COMBINE, dropped_tokens=dropped)
        if attempt.status != AttemptStatus.OK:
            return attempt
        return _with_uncertainty(attempt, [*parts, attempt], rule, confidence)


def _prompt_text(prompt: Prompt) -> str:
    """What a rendered prompt sends: the completion text, or the messages' contents."""
    return prompt.text or "\n".join(content for _, content in prompt.messages)


def _confidence(rule: Rule) -> Callable[[Part | NewAttempt], float]:
    """A chunk's confidence by the rule's measure, higher = surer; unknown = least sure."""

    def of(part: Part | NewAttempt) -> float:
        value = rule.confidence(lambda name: getattr(part, name, None))
        return value if value is not None and not math.isnan(value) else -math.inf

    return of


def _with_uncertainty(
    attempt: NewAttempt, support: list[Any], rule: Rule, confidence: Callable[[Any], float]
) -> NewAttempt:
    """`attempt` carrying the measures of its least confident supporting part, escalated by them."""
    worst = min(support, key=confidence)
    measures: dict[str, float | None] = {m: getattr(worst, m, None) for m in MEASURES}
    return replace(
        attempt,
        first_token_margin=measures["first_token_margin"],
        mean_entropy=measures["mean_entropy"],
        max_entropy=measures["max_entropy"],
        mean_nll=measures["mean_nll"],
        escalated=rule.escalates(measures.get),
    )


def _merge(
    kind: str, fields: list[str], parts: list[Part], confidence: Callable[[Part], float]
) -> tuple[str, list[Part]]:
    """The combined answer of extract, classify, qa or template chunks, and the parts it rests on."""
    if kind == "classify":
        # Confidences may be negative (an entropy's negation): shift so every vote weighs > 0.
        low = min((confidence(p) for p in parts if math.isfinite(confidence(p))), default=0.0)
        votes: dict[str, float] = defaultdict(float)
        for part in parts:
            c = confidence(part)
            votes[_label(part.answer)] += (c - low + 1e-6) if math.isfinite(c) else 1e-6
        winner = max(votes, key=lambda label: votes[label])  # first seen wins a tie (dicts keep order)
        support = [p for p in parts if _label(p.answer) == winner]
        return next(p.answer or "" for p in support).strip(), support
    if kind == "extract":
        merged: dict[str, Any] = {name: None for name in fields}
        used_parts: list[Part] = []
        for part in sorted(parts, key=confidence, reverse=True):
            found = _json_object(part.answer or "")
            used = False
            for name in fields:
                if merged[name] in (None, "", []) and found.get(name) not in (None, "", []):
                    merged[name] = found[name]
                    used = True
            if used:
                used_parts.append(part)
        return json.dumps(merged, ensure_ascii=False), used_parts or parts
    if kind == "qa":
        answered = [p for p in parts if not _NOT_FOUND.match((p.answer or "").strip())]
        if not answered:
            return (parts[0].answer or "").strip(), parts
        groups: dict[str, list[Part]] = defaultdict(list)
        for part in answered:
            groups[_label(part.answer)].append(part)
        best = max(groups.values(), key=lambda g: (len(g), sum(max(confidence(p), -1e9) for p in g)))
        return (best[0].answer or "").strip(), best
    return "\n\n".join((p.answer or "").strip() for p in parts), parts


def _label(answer: str | None) -> str:
    return " ".join((answer or "").lower().strip(" .!\n\t\"'").split())


def _json_object(text: str) -> dict[str, Any]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        value = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):  # a model's answer nested past the stack is no object either
        return {}
    return value if isinstance(value, dict) else {}


def _price(config: ModelConfig) -> Decimal:
    return Decimal(str(config.gpus.usd_per_hour))


def _run(prompt: PromptRow, fit: Fit, call: Call) -> NewAttempt:
    """The attempt on the text `fit` kept (or its refusal, without a call), with the tokens it dropped."""
    refusal = refused(fit.refuse) if fit.refuse else None
    return replace(call(replace(prompt, text=fit.text), refusal), dropped_tokens=fit.dropped_tokens)


def refused(reason: str) -> PermanentError:
    """A `fail` policy's refusal, recorded by the pipeline as the attempt's error (no model call)."""
    return PermanentError(reason)

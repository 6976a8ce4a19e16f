"""One step of the cascade: answer (or critique, or refine) a prompt with one model, record the
attempt, then decide the prompt's next step. Plain code with its dependencies passed in; the Celery
task in workers/tasks.py only adds delivery, retries and publishing.

A prompt's steps on one model: `answer`, then, when the model has `refine: {rounds: N}`,
`critique` 1 -> `refine` 1 -> ... -> `critique` N -> `refine` N (stopping early when a critique finds
nothing to fix). The model's latest answer then decides: keep it (final) or escalate to the next
model, which starts again at `answer`. Every step is its own message on the model's queue, so no
task ever waits for another.

`Pipeline.run` reads as load -> prepare -> call -> judge -> decide -> apply, in three short phases so
no database connection is held during a slow inference call:
  1. load: the prompt and any attempt already recorded for this step (a redelivery): one query;
  2. prepare, call, judge, unless the attempt exists: the stage's handler (an answer, a critique or
     refine, a long document's chunk wait or combine: herd/cascade/chunks.py) builds the request, the
     backend answers, `_judge` measures the answer into a new attempt;
  3. decide and apply, in one transaction: record the attempt, `decide` (herd/cascade/decide.py, a
     pure function) and `apply` its decision (herd/ledger/decisions.py), claim a refill.
The caller publishes the returned dispatches after that commit.

`connect` gives autocommit connections. A worker's CPU per message is what bounds its throughput, and
every round trip to Postgres costs some, so when `decide` keeps a new answer as final (the common
step) and nothing else follows from it, phase 3 is one statement, `ledger.record_final`; every other
case (errors, refinement, escalation, redeliveries, a concurrent duplicate) applies the decision with
several statements inside `conn.transaction()`. Both paths take the same decision: they call `decide`.

Who decides: the task's active policy version when there is one (herd/policy/active.py, cached
per worker), else the herd file. Two kinds of job change what happens after a model's work ends:
a calibration job (`jobs.kind = 'calibration'`) sends every prompt on to the next model of the
herd file's route whatever the decision (recorded in `attempts.escalated` for reference), so every
model answers every prompt; a job with a budget parks an escalating prompt as 'held' and
herd/policy/job_budget.py releases the held candidates least confident first when the job is otherwise idle.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from decimal import Decimal
from functools import lru_cache, partial

import psycopg
from psycopg.types.json import Jsonb

from herd.backends.base import Backend, BackendError, Generation, GenerationRequest, Prompt, RetryableError
from herd.cascade import chunks, requests
from herd.cascade.decide import Job, decide, ends, needs_kept
from herd.cascade.prompts import RenderError, followup, render
from herd.cascade.uncertainty import NoTokensError, measure
from herd.herdfile.model import HerdConfig, ModelConfig, TaskTier
from herd.herdfile.references import StaleReference, stale_reference
from herd.ledger import chunks as ledger_chunks
from herd.ledger import steps as ledger
from herd.ledger.decisions import Decision, Fail, Final, Outcome, apply
from herd.ledger.steps import AttemptRow, NewAttempt, PromptRow
from herd.policy.active import ActivePolicies, Rule, herd_rounds
from herd.policy.job_budget import idle_budget_jobs, release
from herd.redact import mask_url, redact
from herd.settings import get_settings
from herd.vocabulary import FINISHED, AttemptStatus, Dispatch, OutcomeKind, PromptState, Stage, StepKey

log = logging.getLogger(__name__)

__all__ = ["Connect", "Outcome", "Pipeline", "busy_seconds", "clean_text", "storable"]

ANSWER, CRITIQUE, REFINE = Stage.ANSWER, Stage.CRITIQUE, Stage.REFINE
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


class Pipeline:
    def __init__(
        self,
        herd: HerdConfig,
        backends: Mapping[str, Backend],
        connect: Connect,
        policies: ActivePolicies | None = None,
        window: int | None = None,
    ) -> None:
        self.herd = herd
        self.backends = backends
        self.connect = connect
        self.policies = policies if policies is not None else ActivePolicies(connect)
        self._window = window
        # Long-document policies (herd/cascade/chunks.py); None keeps every hook below a no-op.
        self.long = chunks.LongDocumentPolicy(herd) if chunks.needed(herd) else None

    def run(
        self, prompt_id: int, key: StepKey, *, retries: int = 0, give_up: BackendError | None = None
    ) -> Outcome:
        """Run step `key` of `prompt_id`. Raises RetryableError for the caller to retry, unless
        `give_up` is set: then the retries are spent and that error is recorded as the attempt.

        Whatever goes wrong after the model call is recorded as an error attempt with a readable
        reason (a malformed answer, one the measures or Postgres cannot take), so the model is never
        called again for a step that has an outcome. Raises psycopg.OperationalError when the database
        is unreachable (the caller retries the step); anything else is a bug for `fail_step`."""
        with self.connect() as conn:  # load
            state = ledger.load_step(conn, prompt_id, key)
        if state is None:
            log.warning("prompt %s no longer exists; dropping its message", prompt_id)
            return Outcome(OutcomeKind.SKIPPED)
        prompt, existing = state.prompt, state.attempt
        if prompt.state in FINISHED or StepKey(prompt.model, prompt.stage, prompt.round) != key:
            return Outcome(OutcomeKind.SKIPPED)  # a duplicate or stale delivery: the prompt has moved on
        step = self.herd.tier(prompt.task, key.model)
        rule = self.rule(prompt, key.model)
        new = None
        if existing is None:  # prepare -> call -> judge (a redelivery replays the recorded attempt)
            done = self._handle(prompt, step, rule, key, state.review, retries, give_up)
            if isinstance(done, Outcome):
                return done  # a long document split into chunks, or waiting for them: no attempt
            new = done
        try:  # decide -> apply
            return self._record(prompt, rule, key, existing, new)
        except psycopg.OperationalError as exc:
            # The connection died under us (Postgres restarted, failed over, an idle timeout). The
            # model's answer is in hand: record it on a fresh connection (the pool checks it) rather
            # than make the caller retry the step and call the model again.
            log.warning(
                "prompt %s: recording %s %s failed (%s); trying again", prompt.id, key.model, key.stage, exc
            )
            return self._record(prompt, rule, key, existing, new)
        except (psycopg.DataError, psycopg.IntegrityError, UnicodeError) as exc:
            if new is None or new.status != AttemptStatus.OK:
                raise
            # Postgres refused the answer itself: keep a readable reason, not a prompt stuck queued.
            log.warning("prompt %s: cannot record the answer of %s: %s", prompt.id, key.model, exc)
            refused = replace(
                new,
                status=AttemptStatus.ERROR,
                answer=None,
                escalated=False,
                error=f"cannot record the answer: {exc}",
            )
            return self._record(prompt, rule, key, existing, refused)

    def _handle(
        self,
        prompt: PromptRow,
        step: TaskTier,
        rule: Rule,
        key: StepKey,
        review: tuple[str, str] | None,
        retries: int,
        give_up: BackendError | None,
    ) -> Outcome | NewAttempt:
        """Prepare, call and judge step `key` with its stage's handler: the new attempt, or the Outcome
        of a long document's step that makes none (split into chunks, waiting for them)."""

        def call(
            sent: PromptRow, refusal: BackendError | None, context: tuple[str, str] | None = review
        ) -> NewAttempt:
            return self._attempt(sent, step, rule, key, context, retries, refusal)

        long = self.long
        if long is None or give_up is not None:
            return call(prompt, give_up)
        if key.stage == chunks.CHUNKS:
            return long.waiting(self.connect, prompt, key)
        if key.stage == chunks.COMBINE:
            with self.connect() as conn:
                parts = ledger_chunks.parts(conn, prompt.id, key.model)
            return long.combine(prompt, step, rule, key, retries, parts, partial(call, context=None))
        if key.stage == ANSWER:
            return long.answer(self.connect, prompt, step, key, call)
        config = self.herd.models[step.model]
        return long.followup(
            prompt,
            step,
            lambda text: self._request(replace(prompt, text=text), step, key, config, review),
            call,
        )

    def _record(
        self, prompt: PromptRow, rule: Rule, key: StepKey, existing: AttemptRow | None, new: NewAttempt | None
    ) -> Outcome:
        """Phase 3: record the new attempt (or replay the existing one), decide, apply the decision.

        The one-statement path: when `decide` keeps the new attempt itself as final and nothing else
        follows from it (a budget job's step may release held candidates, a chunk's end may start its
        document's combine step), `ledger.record_final` does it all."""
        job = Job(self._calibration_next(prompt, key.model))
        stored = storable(new) if new is not None else None  # cleaned once, for either path
        with self.connect() as conn:
            if stored is not None and self._plain(prompt):
                if not needs_kept(key, stored):
                    decision = decide(prompt, rule, key, stored, job)
                    if isinstance(decision, Final) and decision.answer is stored:
                        refill = ledger.record_final(conn, stored, decision.version)
                        if refill is not None:
                            return Outcome(OutcomeKind.FINAL, tuple(refill))
                        # The step's attempt exists already (a concurrent duplicate): replay it below.
            with conn.transaction():
                attempt = existing or ledger.insert_attempt(conn, stored)  # type: ignore[arg-type]
                kept = ledger.latest_answer(conn, prompt.id, key.model) if needs_kept(key, attempt) else None
                return self._apply(conn, prompt, key, decide(prompt, rule, key, attempt, job, kept))

    def _plain(self, prompt: PromptRow) -> bool:
        """Whether a final answer of `prompt` only frees its slot for one pending prompt (`_refill`)."""
        return prompt.budget_usd is None and not (self.long is not None and chunks.is_chunk(prompt))

    def _apply(
        self, conn: psycopg.Connection, prompt: PromptRow, key: StepKey, decision: Decision
    ) -> Outcome:
        """Write `decision` (herd/ledger/decisions.py) and, when the prompt left the window, refill it."""
        applied = apply(conn, prompt.id, key, decision)
        if applied.freed is None:
            return Outcome(applied.kind, applied.dispatches)
        return Outcome(applied.kind, applied.dispatches + self._refill(conn, prompt, applied.freed))

    def fail_step(self, prompt_id: int, key: StepKey, reason: str, *, retries: int = 0) -> Outcome:
        """The last resort when running step `key` raised something no other rule covers (a bug, a
        herd file changed under a running job): record an error attempt for the step, unless one is
        recorded already, and fail the prompt with `reason`. The prompt then has an outcome; without
        one it would stay queued and the stale sweep would call the model again, forever."""
        reason = redact(clean_text(reason))
        with self.connect() as conn, conn.transaction():
            state = ledger.load_step(conn, prompt_id, key)
            if state is None:
                return Outcome(OutcomeKind.SKIPPED)
            prompt = state.prompt
            if prompt.state in FINISHED or StepKey(prompt.model, prompt.stage, prompt.round) != key:
                return Outcome(OutcomeKind.SKIPPED)
            config = self.herd.models.get(key.model)
            if state.attempt is None:
                ledger.insert_attempt(
                    conn,
                    NewAttempt(
                        prompt_id=prompt_id,
                        model=key.model,
                        stage=key.stage,
                        round=key.round,
                        status=AttemptStatus.ERROR,
                        retries=retries,
                        gpu_count=config.gpus.count if config else 0,
                        usd_per_gpu_hour=_price(config) if config else Decimal(0),
                        error=reason,
                    ),  # timestamped by the database at insert (one clock: herd/ledger/steps.py)
                )
            return self._apply(conn, prompt, key, Fail(f"{key.model} {key.stage}: {reason}"))

    def rule(self, prompt: PromptRow, model: str) -> Rule:
        """The decision rule for `model` on `prompt`. A calibration job runs the herd file's refinement
                rounds (so both variants are recorded) and is decided by no policy version. A chunk of a long
                document never escalates on its own: its document does (herd/cascade/chunks.py). A direct
        job's model (and an audit job's reference, herd/quality/audit.py) answers alone, with the herd file's
        refinement rounds and no policy version."""
        rule = self.policies.rule(self.herd, prompt.task, model)
        if self.long is not None and chunks.is_chunk(prompt):
            rule = replace(rule, next=None)
        # One model asked by name (an OpenAI batch's `model`), or an audit's reference: no cascade.
        if prompt.kind in ("direct", "audit"):
            return replace(rule, next=None, rounds=herd_rounds(self.herd, model), version=None)
        if prompt.kind == "calibration":
            return replace(rule, rounds=herd_rounds(self.herd, model), version=None)
        return rule

    def _calibration_next(self, prompt: PromptRow, model: str) -> str | None:
        """In a calibration job, the model after `model` on the herd file's route (None: the last)."""
        if prompt.kind != "calibration" or (self.long is not None and chunks.is_chunk(prompt)):
            return None
        return self.herd.tier(prompt.task, model).next

    @property
    def window(self) -> int:
        if self._window is None:
            self._window = get_settings().dispatch_window
        return self._window

    def _attempt(
        self,
        prompt: PromptRow,
        step: TaskTier,
        rule: Rule,
        key: StepKey,
        context: tuple[str, str] | None,
        retries: int,
        give_up: BackendError | None,
    ) -> NewAttempt:
        config = self.herd.models[step.model]
        # The monotonic clock, not the wall clock: the ledger turns these into the database's time
        # (herd/ledger/steps.py), so a worker whose clock is off changes no window and no cost.
        started = time.monotonic()
        failed = NewAttempt(
            prompt_id=prompt.id,
            model=key.model,
            stage=key.stage,
            round=key.round,
            status=AttemptStatus.ERROR,
            retries=retries,
            gpu_count=config.gpus.count,
            usd_per_gpu_hour=_price(config),
            started_mono=started,
            ended_mono=started,
        )
        if give_up is not None:
            return replace(failed, error=str(give_up), ended_mono=time.monotonic())
        try:
            request = self._request(prompt, step, key, config, context)
        except RenderError as exc:
            return replace(failed, error=str(exc), ended_mono=time.monotonic())
        try:
            generation = self.backends[step.model].generate(request)
        except RetryableError:
            raise  # the caller backs off and retries, or calls again with `give_up`
        except BackendError as exc:
            ended = time.monotonic()
            elapsed = ended - started
            # The server answered (an error status, or no logprobs): the call held the endpoint, so
            # it is charged like any other request, at its measured latency.
            return replace(
                failed,
                error=str(exc),
                endpoint=exc.endpoint or None,
                latency_s=elapsed,
                busy_s=elapsed if exc.endpoint else None,
                ended_mono=ended,
            )
        except Exception as exc:  # backends name their errors; anything else is a bug, recorded
            log.exception("prompt %s: the %s backend raised an unexpected error", prompt.id, step.model)
            return replace(failed, error=f"unexpected error: {exc!r}", ended_mono=time.monotonic())
        # The call happened: whatever is wrong with its result, the attempt is charged for it.
        charged = replace(
            failed,
            prompt_tokens=generation.prompt_tokens,
            generated_tokens=generation.generated_tokens,
            endpoint=mask_url(generation.endpoint) if generation.endpoint else None,
            latency_s=generation.timing.latency_s,
            queue_s=generation.timing.queue_s,
            inference_s=generation.timing.inference_s,
            compute_s=generation.timing.compute_s,
            busy_s=busy_seconds(generation),
            finish_reason=generation.finish_reason,
            ended_mono=started + generation.timing.latency_s,
        )
        try:
            return self._judge(charged, generation, request, rule, key)
        except NoTokensError as exc:
            return replace(charged, error=str(exc))
        except Exception as exc:  # an answer that breaks the measures is recorded, not lost
            log.exception("prompt %s: cannot judge the answer of %s", prompt.id, step.model)
            return replace(charged, error=f"cannot judge the answer: {exc!r}")

    def _judge(
        self,
        charged: NewAttempt,
        generation: Generation,
        request: GenerationRequest,
        rule: Rule,
        key: StepKey,
    ) -> NewAttempt:
        """The attempt for a generation the server returned: its uncertainty and whether it escalates.

        An answer that is not an answer is never kept as confident:
        - empty (no text once the stop sequence and whitespace are gone; e.g. `content: null` from a
          reasoning model cut off before its answer): an error attempt, "empty answer", so the prompt
          fails with that reason instead of keeping "" as a final answer;
        - cut off at max_new_tokens (finish_reason `length`): the answer may be incomplete, so it
          escalates when there is a next model, whatever its uncertainty; a last tier keeps it, and
          the attempt's `finish_reason` shows it was cut off."""
        truncated = generation.finish_reason == "length"
        answer = clean_text(generation.text).strip()
        if not answer:
            cut = f" (cut off at max_new_tokens={request.max_new_tokens})" if truncated else ""
            return replace(charged, error=f"empty answer{cut}, finish_reason={generation.finish_reason}")
        scores = measure(generation.tokens)
        # A decision rests on this answer only if nothing else follows it on this model.
        decides = ends(rule.rounds, key)
        unsure = rule.escalates(scores.value) or (truncated and rule.next is not None)
        returned = requests.returned_logprobs(generation.tokens, request.caller_logprobs)
        return replace(
            charged,
            status=AttemptStatus.OK,
            answer=answer,
            first_token_margin=scores.first_token_margin,
            mean_entropy=scores.mean_entropy,
            max_entropy=scores.max_entropy,
            mean_nll=scores.mean_nll,
            escalated=decides and unsure,
            logprobs=Jsonb(returned) if returned is not None else None,
        )

    def _request(
        self,
        prompt: PromptRow,
        step: TaskTier,
        key: StepKey,
        config: ModelConfig,
        context: tuple[str, str] | None,
    ) -> GenerationRequest:
        task = self.herd.tasks[prompt.task]
        params = config.generation
        if task.kind == "chat":  # a request body, sent as its caller wrote it (herd/cascade/requests.py)
            request = requests.generation_request(prompt.text, prompt.fields, step.prompt_mode, params)
        else:
            rendered: Prompt = render(task, step.prompt_mode, prompt.text, prompt.fields)
            request = GenerationRequest(
                prompt=rendered,
                max_new_tokens=params.max_new_tokens,
                stop=tuple(params.stop),
                temperature=params.temperature,
                top_logprobs=params.top_logprobs,
            )
        if key.stage != ANSWER and config.refine is not None and context is not None:
            answer, critique = context
            instruction = (
                config.refine.critique
                if key.stage == CRITIQUE
                else config.refine.refine.format(critique=critique)
            )
            request = replace(request, prompt=followup(request.prompt, answer, instruction))
            if key.stage == CRITIQUE:
                request = replace(request, max_new_tokens=config.refine.max_new_tokens)
        return replace(request, stop=()) if key.stage == CRITIQUE else request

    def _refill(self, conn: psycopg.Connection, prompt: PromptRow, freed: bool) -> tuple[Dispatch, ...]:
        """If this step took the prompt out of the window (`freed`: not a redelivered, already finished
        step), let one more in: Redis holds a bounded number of messages. In a budget job, then
        release its held candidates if nothing else of the job is in flight. A chunk of a long document
        frees no slot (its document holds one); the last one of a document starts its combine step."""
        if self.long is not None and chunks.is_chunk(prompt):
            return self.long.chunk_finished(conn, prompt)
        refill = ledger.refill(conn, freed)
        if prompt.budget_usd is not None:
            refill += release(
                conn, prompt.job_id, partial(self._next_model, prompt), self.window, unless_in_flight=True
            )
        return tuple(refill)

    def _next_model(self, prompt: PromptRow, model: str) -> str | StaleReference | None:
        """Where a held answer of `model` escalates: a model, None (nowhere), or the StaleReference
        saying why it cannot (the model, or the policy's next one, is gone from the herd file)."""
        if model not in self.herd.models or prompt.task not in self.herd.tasks:
            return stale_reference(self.herd, "prompts", "the held prompt's step", prompt.task, [model])
        rule = self.rule(prompt, model)
        return rule.stale if rule.stale is not None else rule.next

    def release_budgets(self, conn: psycopg.Connection) -> list[Dispatch]:
        """For the pump: release the held candidates of every idle budget job (see herd/policy/job_budget.py).
        Needed when the job's last two steps ran concurrently and neither saw the job idle."""
        dispatches: list[Dispatch] = []
        for job_id, task in idle_budget_jobs(conn):
            held = PromptRow(0, job_id, task, "", None, {}, PromptState.HELD, "", ANSWER, 0)
            dispatches += release(conn, job_id, partial(self._next_model, held), self.window)
        return dispatches


def _price(config: ModelConfig) -> Decimal:
    return _usd(config.gpus.usd_per_hour)


@lru_cache(maxsize=256)
def _usd(value: float) -> Decimal:
    # Once per price, not per attempt: a worker's CPU per message bounds its throughput.
    return Decimal(str(value))


def clean_text(text: str) -> str:
    """`text` as Postgres and UTF-8 can hold it: without U+0000 (a byte-fallback <0x00> token; text
    columns cannot store it) and with lone surrogates (half an emoji) replaced by U+FFFD. Neither is
    ever meaningful in an answer or an error message."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(attempt: NewAttempt) -> NewAttempt:
    """The attempt with its texts cleaned (`clean_text`) and no credentials in its error, ready for
    the ledger."""
    answer = clean_text(attempt.answer) if attempt.answer is not None else None
    error = redact(clean_text(attempt.error)) if attempt.error is not None else None
    if answer == attempt.answer and error == attempt.error:
        return attempt
    return replace(attempt, answer=answer, error=error)


def busy_seconds(generation: Generation) -> float:
    """How long the request kept its endpoint busy: the server's own inference time when it
    reports one (TGI headers, vLLM metrics), else the latency Herd measured."""
    timing = generation.timing
    return timing.inference_s if timing.inference_s is not None else timing.latency_s

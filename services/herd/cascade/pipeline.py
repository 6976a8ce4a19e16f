"""One step of the cascade: answer (or critique, or refine) a prompt with one model, record the
attempt, then decide the prompt's next step. Plain code with its dependencies passed in; the Celery
task in workers/tasks.py only adds delivery, retries and publishing.

A prompt's steps on one model: `answer`, then, when the model has `refine: {rounds: N}`,
`critique` 1 -> `refine` 1 -> ... -> `critique` N -> `refine` N (stopping early when a critique finds
nothing to fix). The model's latest answer then decides: keep it (final) or escalate to the next
model, which starts again at `answer`. Every step is its own message on the model's queue, so no
task ever waits for another.

Three short phases so no database connection is held during a slow inference call:
  1. read the prompt and any attempt already recorded for this step (a redelivery): one query;
  2. call the model, unless the attempt exists;
  3. in one transaction: record the attempt, decide, update the prompt, claim a refill.
The caller publishes the returned dispatches after that commit.

`connect` gives autocommit connections. A worker's CPU per message is what bounds its throughput, and
every round trip to Postgres costs some, so the common step (a new, confident answer that needs no
refinement: final) does phase 3 in one statement, `ledger.record_final`; every other case (errors,
refinement, escalation, redeliveries, a concurrent duplicate) takes the general path, several
statements inside `conn.transaction()`.

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
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache, partial

import psycopg
from psycopg.types.json import Jsonb

from herd.backends.base import Backend, BackendError, Generation, GenerationRequest, Prompt, RetryableError
from herd.cascade import chunks, requests
from herd.cascade.prompts import RenderError, followup, render
from herd.cascade.uncertainty import NoTokensError, measure
from herd.herdfile.model import HerdConfig, ModelConfig, TaskTier
from herd.herdfile.references import StaleReference, stale_reference
from herd.ledger import steps as ledger
from herd.ledger.steps import AttemptRow, NewAttempt, PromptRow
from herd.policy.active import ActivePolicies, Rule, herd_rounds
from herd.redact import mask_url, redact
from herd.vocabulary import FINISHED, AttemptStatus, Dispatch, OutcomeKind, PromptState, Stage, StepKey

log = logging.getLogger(__name__)

ANSWER, CRITIQUE, REFINE = Stage.ANSWER, Stage.CRITIQUE, Stage.REFINE
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class Outcome:
    """What happened, for logs and tests, and the dispatches to publish after the commit."""

    kind: OutcomeKind
    dispatches: tuple[Dispatch, ...] = ()


def no_issues(critique: str | None) -> bool:
    """The generic critique prompt asks for exactly NO ISSUES when nothing needs fixing."""
    return critique is not None and critique.strip().upper().startswith("NO ISSUES")


class Pipeline:
    def __init__(
        self, herd: HerdConfig, backends: Mapping[str, Backend], connect: Connect,
        policies: ActivePolicies | None = None, window: int | None = None,
    ) -> None:  # fmt: skip
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
        with self.connect() as conn:
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
        if existing is None and self.long is not None and give_up is None:
            if key.stage == chunks.CHUNKS:
                return self.long.waiting(self, prompt, key)
            if key.stage == chunks.COMBINE:
                new = self.long.combine(self, prompt, step, rule, key, retries)
            elif key.stage == ANSWER:
                fit = self.long.fit(prompt, step)
                if fit is not None and fit.chunks:
                    return self.long.split(self, prompt, key, fit.chunks)
                if fit is not None:
                    refusal = chunks.refused(fit.refuse) if fit.refuse else None
                    new = self._attempt(
                        replace(prompt, text=fit.text), step, rule, key, None, retries, refusal
                    )
                    new = replace(new, dropped_tokens=fit.dropped_tokens)
        if existing is None and new is None and self.long is not None and give_up is None:
            if key.stage in (CRITIQUE, REFINE):
                new = self._fitted_followup(self.long, prompt, step, rule, key, state.review, retries)
        if existing is None and new is None:
            new = self._attempt(prompt, step, rule, key, state.review, retries, give_up)
        try:
            return self._record(prompt, step, rule, key, existing, new)
        except psycopg.OperationalError as exc:
            # The connection died under us (Postgres restarted, failed over, an idle timeout). The
            # model's answer is in hand: record it on a fresh connection (the pool checks it) rather
            # than make the caller retry the step and call the model again.
            log.warning(
                "prompt %s: recording %s %s failed (%s); trying again", prompt.id, key.model, key.stage, exc
            )
            return self._record(prompt, step, rule, key, existing, new)
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
            return self._record(prompt, step, rule, key, existing, refused)

    def _record(
        self, prompt: PromptRow, step: TaskTier, rule: Rule, key: StepKey, existing: AttemptRow | None,
        new: NewAttempt | None,
    ) -> Outcome:  # fmt: skip
        """Phase 3: record the new attempt (or replay the existing one), decide, move the prompt on."""
        with self.connect() as conn:
            if new is not None and self._is_final(prompt, rule, key, new):
                refill = ledger.record_final(conn, storable(new), rule.version)
                if refill is not None:
                    return Outcome(OutcomeKind.FINAL, tuple(refill))
                # The step's attempt exists already (a concurrent duplicate): replay it below.
            with conn.transaction():
                attempt = existing or ledger.insert_attempt(conn, storable(new))  # type: ignore[arg-type]
                return self._decide(conn, prompt, step, rule, key, attempt)

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
                        prompt_id=prompt_id, model=key.model, stage=key.stage, round=key.round,
                        status=AttemptStatus.ERROR, retries=retries,
                        gpu_count=config.gpus.count if config else 0,
                        usd_per_gpu_hour=_price(config) if config else Decimal(0), error=reason,
                    ),  # timestamped by the database at insert (one clock: herd/ledger/steps.py)
                )  # fmt: skip
            return self._fail(conn, prompt, f"{key.model} {key.stage}: {reason}")

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
            from herd.settings import get_settings

            self._window = get_settings().dispatch_window
        return self._window

    def _is_final(self, prompt: PromptRow, rule: Rule, key: StepKey, new: NewAttempt) -> bool:
        """Whether `_decide` would keep this new attempt as the final answer without reading anything
        else: a successful answer that ends this model's work (no refinement left) and is not escalated.
        Must agree with `_decide`; anything else (critique, escalation, errors) takes the general path.
        Budget jobs always take it: their steps may release held candidates."""
        if prompt.budget_usd is not None or self._calibration_next(prompt, key.model) is not None:
            return False
        if self.long is not None and chunks.is_chunk(prompt):
            return False  # its end may start its document's combine step: the general path
        ends = _ends(rule.rounds, key)
        return new.status == AttemptStatus.OK and ends and not (new.escalated and rule.next is not None)

    def _attempt(
        self, prompt: PromptRow, step: TaskTier, rule: Rule, key: StepKey, context: tuple[str, str] | None,
        retries: int, give_up: BackendError | None,
    ) -> NewAttempt:  # fmt: skip
        config = self.herd.models[step.model]
        # The monotonic clock, not the wall clock: the ledger turns these into the database's time
        # (herd/ledger/steps.py), so a worker whose clock is off changes no window and no cost.
        started = time.monotonic()
        failed = NewAttempt(
            prompt_id=prompt.id, model=key.model, stage=key.stage, round=key.round,
            status=AttemptStatus.ERROR, retries=retries, gpu_count=config.gpus.count,
            usd_per_gpu_hour=_price(config), started_mono=started, ended_mono=started,
        )  # fmt: skip
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
                failed, error=str(exc), endpoint=exc.endpoint or None, latency_s=elapsed,
                busy_s=elapsed if exc.endpoint else None, ended_mono=ended,
            )  # fmt: skip
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

    def _fitted_followup(
        self, long: chunks.LongDocumentPolicy, prompt: PromptRow, step: TaskTier, rule: Rule, key: StepKey,
        review: tuple[str, str] | None, retries: int,
    ) -> NewAttempt | None:  # fmt: skip
        """A critique or refine step whose prompt (document, answer, instruction) is over the model's
        context, run on the document cut to fit (herd/cascade/chunks.py `fit_followup`); None: it fits."""
        config = self.herd.models[step.model]
        fit = long.fit_followup(
            prompt, step, lambda text: self._request(replace(prompt, text=text), step, key, config, review)
        )
        if fit is None:
            return None
        refusal = chunks.refused(fit.refuse) if fit.refuse else None
        new = self._attempt(replace(prompt, text=fit.text), step, rule, key, review, retries, refusal)
        return replace(new, dropped_tokens=fit.dropped_tokens)

    def generate_attempt(
        self, prompt: PromptRow, step: TaskTier, rule: Rule, key: StepKey, retries: int
    ) -> NewAttempt:
        """One model call on `prompt` as it is, recorded as an attempt for `key` (a combine step)."""
        return self._attempt(prompt, step, rule, key, None, retries, None)

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
        decides = _ends(rule.rounds, key)
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

    def _decide(
        self, conn: psycopg.Connection, prompt: PromptRow, step: TaskTier, rule: Rule, key: StepKey,
        attempt: AttemptRow,
    ) -> Outcome:  # fmt: skip
        calibration_next = self._calibration_next(prompt, key.model)
        if attempt.status == AttemptStatus.ERROR:
            if calibration_next is not None:  # calibration: the other models still answer
                return self._escalate(conn, prompt.id, key, calibration_next)
            return self._fail(conn, prompt, f"{step.model} {key.stage}: {attempt.error}")
        rounds = rule.rounds
        if key.stage == ANSWER and rounds:
            return self._advance(conn, prompt.id, key, StepKey(key.model, CRITIQUE, 1))
        if key.stage == CRITIQUE and not no_issues(attempt.answer):
            return self._advance(conn, prompt.id, key, StepKey(key.model, REFINE, key.round))
        if key.stage == REFINE and key.round < rounds:
            return self._advance(conn, prompt.id, key, StepKey(key.model, CRITIQUE, key.round + 1))
        answer = attempt if key.stage != CRITIQUE else ledger.latest_answer(conn, prompt.id, key.model)
        if answer is None:
            raise RuntimeError(f"prompt {prompt.id}: no answer from {key.model} to keep or escalate")
        if key.stage == CRITIQUE and rule.escalates(answer.uncertainty):
            ledger.mark_escalated(conn, answer.id)  # the critique found nothing; the answer stays unsure
            answer = replace(answer, escalated=True)
        if calibration_next is not None:
            return self._escalate(conn, prompt.id, key, calibration_next)
        if rule.version is not None:
            ledger.set_policy_version(conn, prompt.id, rule.version)
        if answer.escalated and rule.next is not None:
            if rule.stale is not None:
                # The next model is gone from the herd file: no worker would ever read its queue.
                return self._fail(conn, prompt, f"{step.model} {key.stage}: cannot escalate: {rule.stale}")
            if prompt.budget_usd is None:
                return self._escalate(conn, prompt.id, key, rule.next)
            held = ledger.hold(conn, prompt.id, key, rule.confidence(answer.uncertainty))
            return Outcome(OutcomeKind.HELD, self._refill(conn, prompt, held))
        freed = ledger.finalize(conn, prompt.id, answer.id, step.model, answer.answer or "")
        return Outcome(OutcomeKind.FINAL, self._refill(conn, prompt, freed))

    def _fail(self, conn: psycopg.Connection, prompt: PromptRow, error: str) -> Outcome:
        """Fail the prompt with `error` (logged: the worker's log names every failure) and refill."""
        log.warning("prompt %s failed: %s", prompt.id, error)
        freed = ledger.fail(conn, prompt.id, error)
        return Outcome(OutcomeKind.FAILED, self._refill(conn, prompt, freed))

    def _escalate(self, conn: psycopg.Connection, prompt_id: int, src: StepKey, model: str) -> Outcome:
        moved = ledger.advance(conn, prompt_id, src, StepKey(model))
        return Outcome(OutcomeKind.ESCALATED, ((prompt_id, model, ANSWER, 0),) if moved else ())

    def _refill(self, conn: psycopg.Connection, prompt: PromptRow, freed: bool) -> tuple[Dispatch, ...]:
        """If this step took the prompt out of the window (`freed`: not a redelivered, already finished
        step), let one more in: Redis holds a bounded number of messages. In a budget job, then
        release its held candidates if nothing else of the job is in flight. A chunk of a long document
        frees no slot (its document holds one); the last one of a document starts its combine step."""
        if self.long is not None and chunks.is_chunk(prompt):
            return self.long.chunk_finished(conn, prompt)
        refill = ledger.refill(conn, freed)
        if prompt.budget_usd is not None:
            from herd.policy.job_budget import release

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
        from herd.policy.job_budget import idle_budget_jobs, release

        dispatches: list[Dispatch] = []
        for job_id, task in idle_budget_jobs(conn):
            held = PromptRow(0, job_id, task, "", None, {}, PromptState.HELD, "", ANSWER, 0)
            dispatches += release(conn, job_id, partial(self._next_model, held), self.window)
        return dispatches

    def _advance(self, conn: psycopg.Connection, prompt_id: int, src: StepKey, dst: StepKey) -> Outcome:
        moved = ledger.advance(conn, prompt_id, src, dst)
        return Outcome(OutcomeKind.REFINING, ((prompt_id, dst.model, dst.stage, dst.round),) if moved else ())


def _ends(rounds: int, key: StepKey) -> bool:
    """No further step of this model follows `key` when it runs `rounds` refinement rounds: its answer
    is the one that is kept or escalated (a critique may still stop the rounds earlier; `_decide`
    handles that case)."""
    return (key.stage == ANSWER and not rounds) or (key.stage == REFINE and key.round == rounds)


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

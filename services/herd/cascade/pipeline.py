"""One step of the cascade: answer (or critique, or refine) a prompt with one model, record the
attempt, then decide the prompt's next step. Plain code with its dependencies passed in; the Celery
task in workers/herd_workers/tasks.py only adds delivery, retries and publishing.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

from herd.backends.base import Backend, BackendError, Generation, GenerationRequest, RetryableError
from herd.cascade.prompts import Prompt, RenderError, followup, render
from herd.cascade.uncertainty import NoTokensError, measure
from herd.herdfile.model import HerdConfig, ModelConfig, Step
from herd.ledger import steps as ledger
from herd.ledger.steps import AttemptRow, Dispatch, NewAttempt, PromptRow, StepKey

log = logging.getLogger(__name__)

ANSWER, CRITIQUE, REFINE = "answer", "critique", "refine"
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class Outcome:
    """What happened, for logs and tests: `final`, `escalated`, `refining`, `failed` or `skipped`."""

    kind: str
    dispatches: tuple[Dispatch, ...] = ()


def no_issues(critique: str | None) -> bool:
    """The generic critique prompt asks for exactly NO ISSUES when nothing needs fixing."""
    return critique is not None and critique.strip().upper().startswith("NO ISSUES")


class Pipeline:
    def __init__(self, herd: HerdConfig, backends: Mapping[str, Backend], connect: Connect) -> None:
        self.herd = herd
        self.backends = backends
        self.connect = connect

    def run(
        self, prompt_id: int, key: StepKey, *, retries: int = 0, give_up: BackendError | None = None
    ) -> Outcome:
        """Run step `key` of `prompt_id`. Raises RetryableError for the caller to retry, unless
        `give_up` is set: then the retries are spent and that error is recorded as the attempt."""
        with self.connect() as conn:
            state = ledger.load_step(conn, prompt_id, key)
        if state is None:
            log.warning("prompt %s no longer exists; dropping its message", prompt_id)
            return Outcome("skipped")
        prompt, existing = state.prompt, state.attempt
        if prompt.state in ("done", "failed") or StepKey(prompt.model, prompt.stage, prompt.round) != key:
            return Outcome("skipped")  # a duplicate or stale delivery: the prompt has moved on
        step = self.herd.step(prompt.task, key.model)
        new = None if existing else self._attempt(prompt, step, key, state.review, retries, give_up)
        with self.connect() as conn:
            if new is not None and self._is_final(step, key, new):
                refill = ledger.record_final(conn, new)
                if refill is not None:
                    return Outcome("final", tuple(refill))
                # The step's attempt exists already (a concurrent duplicate): replay it below.
            with conn.transaction():
                attempt = existing or ledger.insert_attempt(conn, new)  # type: ignore[arg-type]
                return self._decide(conn, prompt, step, key, attempt)

    def _is_final(self, step: Step, key: StepKey, new: NewAttempt) -> bool:
        """Whether `_decide` would keep this new attempt as the final answer without reading anything
        else: a successful answer that ends this model's work (no refinement left) and is not escalated.
        Must agree with `_decide`; anything else (critique, escalation, errors) takes the general path."""
        ends = _ends_model_work(self.herd.models[step.model], key)
        return new.status == "ok" and ends and not (new.escalated and step.next is not None)

    def _attempt(
        self, prompt: PromptRow, step: Step, key: StepKey, context: tuple[str, str] | None,
        retries: int, give_up: BackendError | None,
    ) -> NewAttempt:  # fmt: skip
        config = self.herd.models[step.model]
        started = datetime.now(UTC)
        failed = NewAttempt(
            prompt_id=prompt.id, model=key.model, stage=key.stage, round=key.round, status="error",
            retries=retries, gpu_count=config.gpus.count, usd_per_gpu_hour=_price(config),
            started_at=started, finished_at=started,
        )  # fmt: skip
        if give_up is not None:
            return replace(failed, error=str(give_up), finished_at=datetime.now(UTC))
        try:
            request = self._request(prompt, step, key, config, context)
            generation = self.backends[step.model].generate(request)
            scores = measure(generation.tokens)
        except RetryableError:
            raise  # the caller backs off and retries, or calls again with `give_up`
        except BackendError as exc:
            ended = datetime.now(UTC)
            elapsed = (ended - started).total_seconds()
            # The server answered (an error status, or no logprobs): the call held the endpoint, so
            # it is charged like any other request, at its measured latency.
            return replace(
                failed, error=str(exc), endpoint=exc.endpoint or None, latency_s=elapsed,
                busy_s=elapsed if exc.endpoint else None, finished_at=ended,
            )  # fmt: skip
        except (RenderError, NoTokensError) as exc:
            return replace(failed, error=str(exc), finished_at=datetime.now(UTC))
        # A decision rests on this answer only if nothing else follows it on this model.
        decides = _ends_model_work(config, key)
        return replace(
            failed,
            status="ok",
            answer=generation.text.strip(),
            prompt_tokens=generation.prompt_tokens,
            generated_tokens=generation.generated_tokens,
            first_token_margin=scores.first_token_margin,
            mean_entropy=scores.mean_entropy,
            max_entropy=scores.max_entropy,
            mean_nll=scores.mean_nll,
            escalated=decides and step.escalates(scores.value(step.measure)),
            endpoint=generation.endpoint,
            latency_s=generation.timing.latency_s,
            queue_s=generation.timing.queue_s,
            inference_s=generation.timing.inference_s,
            compute_s=generation.timing.compute_s,
            busy_s=busy_seconds(generation),
            finished_at=started + timedelta(seconds=generation.timing.latency_s),
        )

    def _request(
        self,
        prompt: PromptRow,
        step: Step,
        key: StepKey,
        config: ModelConfig,
        context: tuple[str, str] | None,
    ) -> GenerationRequest:
        task = self.herd.tasks[prompt.task]
        params = config.generation
        rendered: Prompt = render(task, step.prompt_mode, prompt.text, prompt.fields)
        max_new_tokens = params.max_new_tokens
        if key.stage != ANSWER and config.refine is not None and context is not None:
            answer, critique = context
            instruction = (
                config.refine.critique
                if key.stage == CRITIQUE
                else config.refine.refine.format(critique=critique)
            )
            rendered = followup(rendered, answer, instruction)
            if key.stage == CRITIQUE:
                max_new_tokens = config.refine.max_new_tokens
        return GenerationRequest(
            prompt=rendered,
            max_new_tokens=max_new_tokens,
            stop=tuple(params.stop) if key.stage != CRITIQUE else (),
            temperature=params.temperature,
            top_logprobs=params.top_logprobs,
        )

    def _decide(
        self, conn: psycopg.Connection, prompt: PromptRow, step: Step, key: StepKey, attempt: AttemptRow
    ) -> Outcome:
        if attempt.status == "error":
            error = f"{step.model} {key.stage}: {attempt.error}"
            log.warning("prompt %s failed: %s", prompt.id, error)
            freed = ledger.fail(conn, prompt.id, error)
            return Outcome("failed", tuple(ledger.refill(conn, freed)))
        rounds = _rounds(self.herd.models[step.model])
        if key.stage == ANSWER and rounds:
            return self._advance(conn, prompt.id, key, StepKey(key.model, CRITIQUE, 1))
        if key.stage == CRITIQUE and not no_issues(attempt.answer):
            return self._advance(conn, prompt.id, key, StepKey(key.model, REFINE, key.round))
        if key.stage == REFINE and key.round < rounds:
            return self._advance(conn, prompt.id, key, StepKey(key.model, CRITIQUE, key.round + 1))
        answer = attempt if key.stage != CRITIQUE else ledger.latest_answer(conn, prompt.id, key.model)
        if answer is None:
            raise RuntimeError(f"prompt {prompt.id}: no answer from {key.model} to keep or escalate")
        if key.stage == CRITIQUE and step.escalates(answer.uncertainty(step.measure)):
            ledger.mark_escalated(conn, answer.id)  # the critique found nothing; the answer stays unsure
            answer = replace(answer, escalated=True)
        if answer.escalated and step.next is not None:
            moved = ledger.advance(conn, prompt.id, key, StepKey(step.next))
            return Outcome("escalated", ((prompt.id, step.next, ANSWER, 0),) if moved else ())
        freed = ledger.finalize(conn, prompt.id, answer.id, step.model, answer.answer or "")
        # One prompt left the window, let one more in: Redis holds a bounded number of messages.
        return Outcome("final", tuple(ledger.refill(conn, freed)))

    def _advance(self, conn: psycopg.Connection, prompt_id: int, src: StepKey, dst: StepKey) -> Outcome:
        moved = ledger.advance(conn, prompt_id, src, dst)
        return Outcome("refining", ((prompt_id, dst.model, dst.stage, dst.round),) if moved else ())


def _rounds(config: ModelConfig) -> int:
    return config.refine.rounds if config.refine is not None else 0


def _ends_model_work(config: ModelConfig, key: StepKey) -> bool:
    """No further step of this model follows `key`: its answer is the one that is kept or escalated
    (a critique may still stop the rounds earlier; `_decide` handles that case)."""
    rounds = _rounds(config)
    return (key.stage == ANSWER and not rounds) or (key.stage == REFINE and key.round == rounds)


def _price(config: ModelConfig) -> Decimal:
    return Decimal(str(config.gpus.usd_per_hour))


def busy_seconds(generation: Generation) -> float:
    """How long the request kept its endpoint busy: the server's own inference time when it
    reports one (TGI headers, vLLM metrics), else the latency Herd measured."""
    timing = generation.timing
    return timing.inference_s if timing.inference_s is not None else timing.latency_s

"""One step of the cascade: answer a prompt with one model, record the attempt, then finalize the
prompt or hand it to the next model. Plain code with its dependencies passed in; the Celery task in
workers/tasks.py only adds delivery, retries and publishing.

Three short phases so no database connection is held during a slow inference call:
  1. read the prompt and any attempt already recorded for this step (a redelivery);
  2. call the model, unless the attempt exists;
  3. in one transaction: record the attempt, decide, update the prompt, claim a refill.
The caller publishes the returned dispatches after that commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from services import ledger
from services.backends.types import Backend, BackendError, Generation, GenerationRequest, RetryableError
from services.config import HerdConfig, ModelConfig, Step
from services.ledger import AttemptRow, Dispatch, NewAttempt, PromptRow
from services.prompts import RenderError, render
from services.uncertainty import NoTokensError, measure

log = logging.getLogger(__name__)

ANSWER = "answer"
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class Outcome:
    """What happened, for logs and tests: `final`, `escalated`, `failed` or `skipped`."""

    kind: str
    dispatches: tuple[Dispatch, ...] = ()


class Pipeline:
    def __init__(self, herd: HerdConfig, backends: Mapping[str, Backend], connect: Connect) -> None:
        self.herd = herd
        self.backends = backends
        self.connect = connect

    def run(
        self, prompt_id: int, model: str, *, retries: int = 0, give_up: BackendError | None = None
    ) -> Outcome:
        """Answer `prompt_id` with `model`. Raises RetryableError for the caller to retry, unless
        `give_up` is set: then the retries are spent and that error is recorded as the attempt."""
        with self.connect() as conn:
            prompt = ledger.load_prompt(conn, prompt_id)
            existing = ledger.find_attempt(conn, prompt_id, model, ANSWER, 0) if prompt else None
        if prompt is None:
            log.warning("prompt %s no longer exists; dropping its message", prompt_id)
            return Outcome("skipped")
        if prompt.state in ("done", "failed") or prompt.model != model:
            return Outcome("skipped")  # a duplicate or stale delivery: the prompt has moved on
        step = self.herd.step(prompt.task, model)
        attempt = existing
        new: NewAttempt | None = None
        if attempt is None:
            new = self._attempt(prompt, step, retries, give_up)
        with self.connect() as conn:
            if new is not None:
                attempt = ledger.insert_attempt(conn, new)
            if attempt is None:
                raise RuntimeError(f"no attempt for prompt {prompt_id} on {model}")
            outcome = self._decide(conn, prompt, step, attempt)
            conn.commit()
        return outcome

    def _attempt(
        self, prompt: PromptRow, step: Step, retries: int, give_up: BackendError | None
    ) -> NewAttempt:
        config = self.herd.models[step.model]
        started = datetime.now(UTC)
        failed = NewAttempt(
            prompt_id=prompt.id,
            model=step.model,
            stage=ANSWER,
            round=0,
            status="error",
            retries=retries,
            started_at=started,
        )
        if give_up is not None:
            return replace(failed, error=str(give_up))
        try:
            request = self._request(prompt, step, config)
            generation = self.backends[step.model].generate(request)
            scores = measure(generation.tokens)
        except RetryableError:
            raise  # the caller backs off and retries, or calls again with `give_up`
        except (BackendError, RenderError, NoTokensError) as exc:
            return replace(failed, error=str(exc))
        gpu_seconds = _gpu_seconds(generation)
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
            escalated=step.escalates(scores.value(step.measure)),
            endpoint=generation.endpoint,
            latency_s=generation.timing.latency_s,
            queue_s=generation.timing.queue_s,
            inference_s=generation.timing.inference_s,
            compute_s=generation.timing.compute_s,
            gpu_seconds=gpu_seconds,
            cost_usd=_cost(config, gpu_seconds),
        )

    def _request(self, prompt: PromptRow, step: Step, config: ModelConfig) -> GenerationRequest:
        task = self.herd.tasks[prompt.task]
        params = config.generation
        return GenerationRequest(
            prompt=render(task, step.prompt_mode, prompt.text, prompt.fields),
            max_new_tokens=params.max_new_tokens,
            stop=tuple(params.stop),
            temperature=params.temperature,
            top_logprobs=params.top_logprobs,
        )

    def _decide(
        self, conn: psycopg.Connection, prompt: PromptRow, step: Step, attempt: AttemptRow
    ) -> Outcome:
        if attempt.status == "error":
            ledger.fail(conn, prompt.id, f"{step.model}: {attempt.error}")
            return Outcome("failed", tuple(ledger.claim_pending(conn, 1)))
        if attempt.escalated and step.next is not None:
            moved = ledger.move_to(conn, prompt.id, step.model, step.next)
            return Outcome("escalated", ((prompt.id, step.next),) if moved else ())
        ledger.finalize(conn, prompt.id, attempt.id, step.model, attempt.answer or "")
        # One prompt left the window, let one more in: Redis holds a bounded number of messages.
        return Outcome("final", tuple(ledger.claim_pending(conn, 1)))


def _gpu_seconds(generation: Generation) -> float:
    """GPU time of one request: the server's own compute time when it reports one, else wall latency."""
    timing = generation.timing
    for value in (timing.compute_s, timing.inference_s):
        if value is not None:
            return value
    return timing.latency_s


def _cost(config: ModelConfig, gpu_seconds: float) -> Decimal:
    usd_per_second = Decimal(str(config.gpus.usd_per_hour)) * config.gpus.count / 3600
    return (usd_per_second * Decimal(str(gpu_seconds))).quantize(Decimal("1e-10"))

"""Celery tasks: delivery contract, retries and publishing around herd.cascade.pipeline."""

from __future__ import annotations

import logging
import threading

import psycopg
from celery import Task
from celery.exceptions import Reject, Retry, WorkerShutdown
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from herd.backends.base import RetryableError
from herd.herdfile.model import Retries
from herd.housekeeping.sending import send
from herd.housekeeping.work import Housekeeping, request_bound
from herd.jobs.references import stale_versions, waiting_at_unknown
from herd.queues import BROKER_DOWN, TASK_ATTEMPT, app, check_broker, publish
from herd.settings import get_settings
from herd.vocabulary import StepKey
from herd_workers.context import get_context
from herd_workers.delays import ReceiptTimedRequest, delay_headers

log = logging.getLogger(__name__)

# What a broker outage raises: queues.BROKER_DOWN, and Celery's Reject when the retry message could
# not be sent.
BROKER_ERRORS: tuple[type[BaseException], ...] = (*BROKER_DOWN, Reject)


@app.task(
    name=TASK_ATTEMPT,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # bounded per model by the herd file's `retries.max`, below
    # A retry's delay is timed by the worker that receives it, on its own clock (delays.py).
    Request=ReceiptTimedRequest,
)
def attempt(self: Task, prompt_id: int, model: str, stage: str = "answer", round_: int = 0) -> str:
    """Run one step of one prompt on one model, then move the prompt on. Safe to run twice.

    No exception leaves the prompt without an outcome: endpoint errors are retried within the model's
    `retries` and then recorded (services/pipeline.py records everything that goes wrong after the
    call); a lost database connection is retried the same way; anything else fails the step with
    the reason. Otherwise the message would be acked with nothing recorded, and the stale sweep would
    call the model again every stale period, forever."""
    context = get_context()
    retries = self.request.retries
    key = StepKey(model, stage, round_)
    try:
        try:
            outcome = context.pipeline.run(prompt_id, key, retries=retries)
        except RetryableError as exc:
            if retries < _policy(model).max:
                delay = _backoff(model, retries, exc.retry_after_s)
                log.warning(
                    "prompt %s on %s: %s; retry %d in %.1fs", prompt_id, model, exc, retries + 1, delay
                )
                raise _retry(self, exc, delay) from exc
            outcome = context.pipeline.run(prompt_id, key, retries=retries, give_up=exc)
    except Retry:
        raise
    except BROKER_ERRORS as exc:
        # Redis is down: Celery could not even send the retry (it raises Reject then). The step is not
        # at fault, so it must not fail the prompt: its message stays unacked in Redis and comes back
        # after the visibility timeout, or the pump re-sends the prompt after the stale period.
        log.warning("prompt %s on %s: broker unavailable (%r); left to redelivery", prompt_id, model, exc)
        return "deferred"
    except psycopg.OperationalError as exc:
        # The database is unreachable (restart, failover, a dropped idle connection). Nothing is wrong
        # with the step: retry it soon, on a connection the pool has checked, rather than let the
        # prompt wait a whole stale period for the pump to re-send it.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if retries < _policy(model).max:
            delay = _backoff(model, retries)
            log.warning(
                "prompt %s on %s: database: %s; retry %d in %.1fs",
                prompt_id,
                model,
                reason,
                retries + 1,
                delay,
            )
            raise _retry(self, exc, delay) from exc
        # Without a database nothing can be recorded; the pump re-sends the prompt once it is back.
        log.error(
            "prompt %s on %s: database unavailable (%s); left to the stale sweep", prompt_id, model, reason
        )
        return "deferred"
    except Exception as exc:  # no exception may leave a prompt without an outcome
        log.exception("prompt %s on %s %s: unexpected error; failing the step", prompt_id, model, stage)
        outcome = context.pipeline.fail_step(prompt_id, key, f"internal error: {exc!r}", retries=retries)
    if outcome.dispatches:  # most steps send nothing: skip acquiring a producer
        # Committed; what the broker refuses is left due at the next housekeeping tick (sending.py).
        send(
            context.connection,
            outcome.dispatches,
            stale_after_s=get_settings().stale_after_s,
            publish=publish,
        )
    return outcome.kind


def _retry(task: Task, exc: BaseException, delay_s: float) -> Retry:
    """Send the retry of the running task, to run `delay_s` seconds after a worker receives it; return
    the Retry to raise. Raises Reject when the broker cannot take it (Celery's retry does).

    `countdown=0` sends no ETA (Celery would compute one on this host's clock; delays.py says why
    that is wrong between hosts) and keeps Celery's `default_retry_delay` (180 s) out of it."""
    headers = {**(task.request.headers or {}), **delay_headers(delay_s)}
    retry: Retry = task.retry(exc=exc, countdown=0, headers=headers, throw=False)
    retry.when = delay_s  # what Celery logs ("Retry in 1.2s") and Flower shows: the intended delay
    return retry


def _policy(model: str) -> Retries:
    models = get_context().herd.models
    return models[model].retries if model in models else Retries()


def _backoff(model: str, retries: int, retry_after_s: float | None = None) -> float:
    """The model's retry delay (full jitter, at least the server's Retry-After), far below the broker's
    visibility timeout."""
    return _policy(model).delay_s(retries, retry_after_s)


class Pump:
    """Per worker process: the housekeeping tick (herd/housekeeping/work.py), opportunistically.

    `herd housekeeper` does the same work whether or not any worker runs; a worker's pump only makes
    it happen sooner where workers are up (a short fill budget, so it never holds its model's work).
    Submitting fills the window once; each finished prompt lets one more in. This loop repairs what a
    crash between commit and publish could leave behind.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="herd-pump", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        settings = get_settings()
        while not self._stop.wait(settings.pump_interval_s):
            try:
                self.tick()
            except Exception:  # the pump must outlive a database or broker hiccup
                log.exception("dispatch pump failed; retrying in %.0fs", settings.pump_interval_s)

    def tick(self) -> int:
        """One tick; returns how many messages went out (stale re-sends and window admissions)."""
        context = get_context()
        # Budget jobs whose last steps ran concurrently (neither saw the job idle) release here.
        work = Housekeeping(
            context.connection,
            get_settings(),
            release=context.pipeline.release_budgets,
            publish=publish,
            longest_request_s=request_bound(context.herd),
            herd=context.herd,
        )
        done = work.dispatch()
        # The fill after the dispatch work, bounded to one second: a report's open tail shrinks every
        # tick, and a catching-up fill never delays the window.
        work.seal()
        return done.resent + done.admitted - done.unsent


_pump = Pump()


@worker_ready.connect
def _start_pump(**_: object) -> None:
    try:
        get_context()  # fail at start, not on the first message, if the herd file or a model's key is bad
        # Connected now, however late the broker came up: refuse one that may evict the queues
        # (herd/brokerpolicy.py), for `herd worker` and a bare `celery worker` alike.
        for line in check_broker():
            log.warning("%s", line)
    except Exception as exc:
        # Celery only logs what a signal handler raises and would go on consuming; stop instead.
        log.critical("worker cannot start: %s", exc)
        raise WorkerShutdown(1) from exc
    _warn_stale()
    _pump.start()


def _warn_stale() -> None:
    """One WARNING line per stored reference the herd file no longer backs (an active policy or router
    version naming a missing model, prompts waiting at one): the worker runs on, and refuses each
    escalation there with the same line (herd/herdfile/references.py)."""
    context = get_context()
    try:
        with context.connection() as conn:
            found = stale_versions(conn, context.herd) + waiting_at_unknown(conn, context.herd)
    except psycopg.Error as exc:
        log.warning("cannot check stored versions against the herd file: %s", exc)
        return
    for ref in found:
        log.warning("%s", ref)


@worker_shutdown.connect
def _stop_pump(**_: object) -> None:
    _pump.stop()


_asked_to_stop = threading.Event()


@worker_shutting_down.connect
def _note_stop_request(**_: object) -> None:
    _asked_to_stop.set()  # TERM, INT or QUIT: a stop someone asked for


def stopped_on_request() -> bool:
    """Whether the worker stopped because it was told to (a signal), rather than on its own."""
    return _asked_to_stop.is_set()

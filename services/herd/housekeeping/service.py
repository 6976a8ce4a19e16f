"""`herd housekeeper`: the housekeeping of herd/housekeeping/work.py in a process that depends on no
worker, with a leader lock (leader.py), a health check and Prometheus metrics.

Three threads: the leader check, the dispatch half and the seal half, each every `interval_s`. The
halves work only while this replica leads; a seal that takes its whole fill budget never delays a
stale re-send. `/health` answers 200 while the process does its part (leading with a recent
dispatch tick, or standing by with a recent lock check), 503 with the reason otherwise; `/metrics`
serves the housekeeper's own counters (the herd's are `herd metrics`').
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from herd.housekeeping.leader import LeaderLock
from herd.housekeeping.work import Housekeeping

log = logging.getLogger(__name__)

WORK = ("dispatch", "seal")


class Metrics:
    """The housekeeper's metrics, on a registry of its own. Labels are bounded: `work` is one of WORK."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.leader = Gauge(
            "herd_housekeeper_leader", "1 while this replica holds the leader lock", registry=r
        )
        self.ticks = Counter(
            "herd_housekeeper_ticks",
            "Housekeeping ticks run, by half and outcome",
            ["work", "outcome"],
            registry=r,
        )
        self.seconds = Histogram(
            "herd_housekeeper_tick_seconds",
            "Duration of one housekeeping tick",
            ["work"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0),
        )
        self.last_ok = Gauge(
            "herd_housekeeper_last_success_timestamp_seconds",
            "When a tick last succeeded",
            ["work"],
            registry=r,
        )
        self.resent = Counter("herd_housekeeper_resent_prompts", "Stale prompts re-sent", registry=r)
        self.admitted = Counter(
            "herd_housekeeper_admitted_prompts", "Prompts let into the dispatch window", registry=r
        )
        self.unsent = Counter(
            "herd_housekeeper_unsent_messages",
            "Messages the broker refused (left due for the next tick)",
            registry=r,
        )
        self.stored = Counter("herd_housekeeper_cost_shares_stored", "Cost shares made final", registry=r)
        self.sealed = Counter("herd_housekeeper_sealed_jobs", "Finished jobs sealed", registry=r)
        for work in WORK:  # every series from the first scrape, at 0
            for outcome in ("ok", "error"):
                self.ticks.labels(work, outcome)
            self.seconds.labels(work)


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


class Housekeeper:
    """Runs `work` while `lock` is held. `stale_s`: how old the last successful dispatch tick (leader)
    or lock check (standby) may be before /health fails."""

    def __init__(
        self,
        work: Housekeeping,
        lock: LeaderLock,
        *,
        interval_s: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.work = work
        self.lock = lock
        self.interval_s = interval_s
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.stale_s = max(3 * interval_s, 30.0)
        self.stopped = threading.Event()
        self._leading = threading.Event()
        self._last: dict[str, float] = {}  # "lock", "dispatch", "seal" -> monotonic time of last success
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Check the lock once (so /health answers for a known state from the start), then run."""
        self._check_lock()
        for name, target in (("lock", self._lock_loop), ("dispatch", self._dispatch), ("seal", self._seal)):
            thread = threading.Thread(
                target=target if name == "lock" else self._loop(name, target),
                name=f"housekeeper-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stopped.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        self.lock.close()

    def health(self) -> Health:
        now = self.clock()
        lock_age = now - self._last.get("lock", float("-inf"))
        if lock_age > self.stale_s:
            return Health(False, f"no successful leader-lock check for {lock_age:.0f}s (database down?)")
        if not self._leading.is_set():
            return Health(True, "standing by (another replica leads)")
        age = now - max(self._last.get("dispatch", float("-inf")), self._last.get("lead", now))
        if age > self.stale_s:
            return Health(False, f"leading, but no successful dispatch tick for {age:.0f}s")
        return Health(True, "leading")

    def _check_lock(self) -> None:
        try:
            leading = self.lock.check()
            self._last["lock"] = self.clock()
        except Exception as exc:  # noqa: BLE001 - a database outage: retry, never die
            leading = False
            log.warning("housekeeper: leader lock check failed: %s", str(exc).strip().splitlines()[0])
        if leading and not self._leading.is_set():
            self._last["lead"] = self.clock()
            self._leading.set()
        elif not leading:
            self._leading.clear()
        self.metrics.leader.set(1 if leading else 0)

    def _lock_loop(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self._check_lock()

    def _loop(self, name: str, tick: Callable[[], None]) -> Callable[[], None]:
        def loop() -> None:
            while not self.stopped.wait(self.interval_s):
                if not self._leading.is_set():
                    continue
                started = self.clock()
                try:
                    tick()
                except Exception:  # outlive a database or broker outage
                    self.metrics.ticks.labels(name, "error").inc()
                    log.exception("housekeeper: %s tick failed; retrying in %.0fs", name, self.interval_s)
                    continue
                self._last[name] = self.clock()
                self.metrics.ticks.labels(name, "ok").inc()
                self.metrics.seconds.labels(name).observe(self.clock() - started)
                self.metrics.last_ok.labels(name).set(time.time())

        return loop

    def _dispatch(self) -> None:
        done = self.work.dispatch()
        self.metrics.resent.inc(done.resent)
        self.metrics.admitted.inc(done.admitted)
        self.metrics.unsent.inc(done.unsent)
        if done.resent or done.unsent:
            log.info(
                "housekeeper: re-sent %d stale prompt(s), admitted %d, %d not sent",
                done.resent,
                done.admitted,
                done.unsent,
            )

    def _seal(self) -> None:
        result = self.work.seal()
        if result is None:
            return
        self.metrics.stored.inc(result.stored)
        self.metrics.sealed.inc(result.sealed)
        if result.sealed:
            log.info("housekeeper: sealed %d finished job(s)", result.sealed)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base class's name
        pass  # a probe every few seconds is not worth a log line


def serve(housekeeper: Housekeeper, address: str, port: int) -> ThreadingWSGIServer:
    """An HTTP server for /health and /metrics, serving in a daemon thread; `shutdown()` it to stop."""
    metrics_app = make_wsgi_app(housekeeper.metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            health = housekeeper.health()
            start_response(
                "200 OK" if health.ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8")],
            )
            return [f"{health.reason}\n".encode()]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(address, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="housekeeper-http", daemon=True).start()
    return server

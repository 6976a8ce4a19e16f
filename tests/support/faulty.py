"""The endpoint double with faults injected at random (seeded) per request, for the fault-injection suite.

Wraps tests/support/endpoint.py without changing it: every request that draws no fault is served by the
plain double (same TGI / OpenAI wire formats, same rules and script), so the real client code runs
unchanged. A request that draws a fault gets, on the route it called:

* ``status424``: HTTP 424 with TGI's error body (a shard failed mid-generation, e.g. CUDA OOM);
* ``status5xx``: HTTP 500, 502 or 503;
* ``status429``: HTTP 429 ``Model is overloaded``;
* ``malformed``: HTTP 200 with a body the protocol does not allow, one of ``MALFORMED``: the real
  JSON cut in half (``truncated``), a proxy's HTML page (``html``), no answer in it (``no_answer``:
  OpenAI ``choices: []``, TGI without ``generated_text``), or every token's logprob ``null``
  (``null_logprob``, as vLLM sends for a NaN);
* ``hang``: the request is held ``hang_s`` seconds (longer than the client's timeout), then answered.

Draws are reproducible: the n-th call for one (model, prompt) draws from
``random.Random(f"{seed}|{model}|{prompt}|{n}")``, whatever order requests arrive in (n restarts at 1
when the process restarts). Every call, faulted or not, is logged on arrival; with ``call_log`` each is
also appended to that JSONL file (``{"model", "protocol", "prompt", "status", "fault", "time"}``), which
survives a restart of the double, so a benchmark can count the calls the model received.

Out of process: ``python -m tests.support.faulty --port N --script FILE.json --faults JSON --call-log F``
prints ``READY http://127.0.0.1:N`` once listening, like ``python -m tests.support.endpoint``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from tests.support.endpoint import (
    _PROTOCOLS,
    EndpointDouble,
    Reply,
    _Core,
    _error,
    _Handler,
    _Invalid,
    _Server,
    serve,
)

FAULT_KINDS = ("status424", "status5xx", "status429", "malformed", "hang")
MALFORMED = ("truncated", "html", "no_answer", "null_logprob")
RAW = "__raw_body__"  # a reply whose payload holds this key is sent as these bytes, not as JSON
RAW_TYPE = "__raw_content_type__"


@dataclass(frozen=True)
class Faults:
    """Probability of each fault per request (their sum at most 1), the hang length and the seed."""

    status424: float = 0.0
    status5xx: float = 0.0
    status429: float = 0.0
    malformed: float = 0.0
    hang: float = 0.0
    hang_s: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        probs = [getattr(self, kind) for kind in FAULT_KINDS]
        if any(not 0 <= p <= 1 for p in probs) or sum(probs) > 1 + 1e-9:
            raise ValueError(f"fault probabilities must be in [0, 1] and sum to <= 1: {probs}")
        if self.hang_s <= 0:
            raise ValueError("hang_s must be > 0")

    @classmethod
    def coerce(cls, obj: Faults | Mapping[str, Any] | None) -> Faults:
        if obj is None:
            return cls()
        if isinstance(obj, Faults):
            return obj
        unknown = set(obj) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        return cls(**obj)

    def draw(self, model: str, prompt: str, n: int) -> tuple[str | None, random.Random]:
        """The fault for the n-th call of (model, prompt), or None; and the generator for its details."""
        rng = random.Random(f"{self.seed}|{model}|{prompt}|{n}")
        u = rng.random()
        for kind in FAULT_KINDS:
            p = getattr(self, kind)
            if u < p:
                return kind, rng
            u -= p
        return None, rng


def _malform(variant: str, protocol: str, reply: Reply) -> Reply:
    status, body, headers = reply
    if status != 200:  # the plain double refused the request anyway: nothing to corrupt
        return reply
    if variant == "truncated":
        text = json.dumps(body, separators=(",", ":"))
        return 200, {RAW: text[: len(text) // 2]}, headers
    if variant == "html":
        page = "<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>"
        return 200, {RAW: page, RAW_TYPE: "text/html"}, {}
    body = json.loads(json.dumps(body))  # a deep copy
    if variant == "no_answer":
        if protocol == "tgi":
            body.pop("generated_text", None)
        else:
            body["choices"] = []
        return 200, body, headers
    # null_logprob: vLLM serialises a NaN logprob as null.
    if protocol == "tgi":
        for tok in (body.get("details") or {}).get("tokens") or []:
            tok["logprob"] = None
    elif protocol == "chat":
        for choice in body.get("choices") or []:
            for tok in (choice.get("logprobs") or {}).get("content") or []:
                tok["logprob"] = None
    else:
        for choice in body.get("choices") or []:
            lp = choice.get("logprobs") or {}
            if lp.get("token_logprobs"):
                lp["token_logprobs"] = [None for _ in lp["token_logprobs"]]
    return 200, body, headers


class _FaultyCore(_Core):
    def __init__(self, faults: Faults, call_log: Path | None, max_calls: int) -> None:
        super().__init__(max_calls)
        self.faults = faults
        self._n: dict[tuple[str, str], int] = {}
        self._local = threading.local()
        self._log: IO[str] | None = call_log.open("a", encoding="utf-8", buffering=1) if call_log else None

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _record(
        self,
        model: str,
        protocol: str,
        prompt: str,
        status: int,
        auth: str | None,
        params: dict[str, Any] | None = None,
    ) -> None:
        # Caller holds the lock. Skipped when serve() already logged this call on arrival.
        if getattr(self._local, "skip", False):
            return
        super()._record(model, protocol, prompt, status, auth, params)
        fault = getattr(self._local, "fault", None)
        self._calls[-1]["fault"] = fault
        if self._log is not None:
            line = {"model": model, "protocol": protocol, "prompt": prompt, "status": status}
            self._log.write(json.dumps(line | {"fault": fault, "time": time.time()}) + "\n")

    def serve(self, model: str, protocol: str, req: Any, auth: str | None = None) -> Reply:
        try:
            prompt = _PROTOCOLS[protocol][0](req) if isinstance(req, dict) else None
        except _Invalid:
            prompt = None
        self._local.fault, self._local.skip = None, False
        if prompt is None:  # the plain double rejects it (and logs it)
            return super().serve(model, protocol, req, auth)
        with self._lock:
            n = self._n[(model, prompt)] = self._n.get((model, prompt), 0) + 1
        kind, rng = self.faults.draw(model, prompt, n)
        if kind is None:
            return super().serve(model, protocol, req, auth)
        status = {"status424": 424, "status5xx": rng.choice((500, 502, 503)), "status429": 429}.get(kind, 200)
        variant = rng.choice(MALFORMED) if kind == "malformed" else None
        self._local.fault = f"{kind}:{variant}" if variant else kind
        with self._lock:  # logged on arrival: a hung call is counted even if the double stops meanwhile
            self._record(model, protocol, prompt, status, auth)
        self._local.skip = True
        try:
            if status != 200:
                return _error(status)
            if kind == "hang":
                time.sleep(self.faults.hang_s)  # the client has given up by now; the answer is wasted
                return super().serve(model, protocol, req, auth)
            return _malform(str(variant), protocol, super().serve(model, protocol, req, auth))
        finally:
            self._local.skip = False


class _FaultyHandler(_Handler):
    def _send(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        if RAW not in payload:
            super()._send(status, payload, headers)
            return
        data = str(payload[RAW]).encode()
        self.send_response(status)
        self.send_header("Content-Type", str(payload.get(RAW_TYPE, "application/json")))
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _FaultyServer(_Server):
    def __init__(self, address: tuple[str, int], core: _Core) -> None:
        self.core = core
        ThreadingHTTPServer.__init__(self, address, _FaultyHandler)


class FaultyDouble(EndpointDouble):
    """EndpointDouble whose requests draw faults (see the module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | Mapping[str, Any] | None = None,
        call_log: Path | None = None,
        max_calls: int = 100_000,
    ) -> None:
        super().__init__(host, port, max_calls)
        self._core: _FaultyCore = _FaultyCore(Faults.coerce(faults), call_log, max_calls)

    def start(self) -> FaultyDouble:
        if self._server is None:
            self._server = _FaultyServer((self._host, self._port), self._core)
            self._port = self._server.server_port
            serve, poll = self._server.serve_forever, {"poll_interval": 0.05}
            self._thread = threading.Thread(target=serve, kwargs=poll, name="faulty-double", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()
        self._core.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The endpoint double with random, seeded faults.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    parser.add_argument("--script", help="JSON file in the POST /_script body format")
    parser.add_argument("--faults", default="{}", help='JSON, e.g. {"status424": 0.05, "hang_s": 6}')
    parser.add_argument("--call-log", type=Path, help="append every call to this JSONL file")
    parser.add_argument("--max-calls", type=int, default=100_000, help="call-log entries kept in memory")
    args = parser.parse_args(argv)
    double = FaultyDouble(args.host, args.port, json.loads(args.faults), args.call_log, args.max_calls)
    return serve(double, args.script)


if __name__ == "__main__":
    sys.exit(main())

"""HTTP glue shared by the backends: response headers, error mapping, endpoint rotation.

InferenceClient returns only the response body, but TGI reports its timings in response headers
(`x-inference-time`, ...), which the cost ledger needs. huggingface_hub sends every request through
one shared httpx client made by a replaceable factory; we install a factory that adds a response
hook copying the headers into a thread-local slot. A backend clears the slot, makes its call and
reads the slot back in the same thread (Celery's thread pool runs one task per thread), so no
request can see another's headers.

Credentials: InferenceClient given no key looks up the machine's Hugging Face token (reading the token
file on every call) and sends it to whatever URL it calls: a self-hosted endpoint would receive it.
Backends therefore always pass a key, the model's own (`api_key_env`) or a placeholder.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx2
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import _http as hf_http

from herd import redact
from herd.backends.base import BackendError, PermanentError, RetryableError
from herd.herdfile.model import ConfigError, ModelConfig

# Sent as the key when the herd file names none. Any explicit key stops huggingface_hub from reading and
# sending the Hugging Face token; servers started without a key ignore it ("EMPTY" is vLLM's convention).
PLACEHOLDER_KEY = "EMPTY"

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def _remember_headers(response: httpx2.Response) -> None:
    _local.headers = response.headers  # case-insensitive; no copy, most calls never read it


def _client_with_header_hook() -> httpx2.Client:
    client = hf_http.default_client_factory()
    hooks = client.event_hooks
    hooks["response"] = [*hooks.get("response", []), _remember_headers]
    client.event_hooks = hooks
    return client


def install_header_capture() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            hf_http.set_client_factory(_client_with_header_hook)
            # httpx logs every request at INFO (a line per attempt, the worker's largest log cost).
            # Failures are not lost: backends turn them into errors that Herd logs and stores.
            quiet = logging.getLogger("httpx2")
            if quiet.level == logging.NOTSET:  # unless configured explicitly
                quiet.setLevel(logging.WARNING)
            _installed = True


def api_key(name: str, config: ModelConfig) -> str | None:
    """The model's API key from the environment variable its `api_key_env` names, or None.
    Called when the worker builds its backends, so a missing variable stops it at start."""
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ConfigError(
            f"models.{name}.api_key_env: environment variable {config.api_key_env} is not set "
            f"(it should hold the API key of model {name!r})"
        )
    redact.register(key)  # a server echoing it back never puts it in a log or a stored error
    return key


def auth_headers(key: str | None) -> dict[str, str]:
    """For raw calls (the shared client, the OpenAI backend's pool), which never add credentials by
    themselves."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def clear_headers() -> None:
    _local.headers = {}


def last_headers() -> Mapping[str, str]:
    return getattr(_local, "headers", {})


def session() -> httpx2.Client:
    """huggingface_hub's shared client, for raw calls beside InferenceClient's (the context probes,
    herd/backends/context.py). The OpenAI backend has its own pool (herd/backends/jsonclient.py)."""
    install_header_capture()
    return hf_http.get_session()


# 408 request timeout, 429 overloaded, and 424: TGI's router answers every generation failure of a shard
# (CUDA out of memory under load, NCCL or kernel errors) with 424 Failed Dependency; the same request
# succeeds when sent again. Validation errors are 422 there, and stay permanent.
RETRYABLE_STATUSES = frozenset({408, 424, 429})


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP error status is worth retrying: the ones above and every 5xx."""
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_s(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """A response's `Retry-After` in seconds (>= 0), or None when absent or unreadable.

    RFC 9110 §10.2.3 allows delay-seconds (`120`) or an HTTP-date (`Fri, 31 Dec 2026 23:59:59 GMT`);
    vLLM's and TGI's proxies and most gateways send the first. A date is the server's clock, so it is
    measured from the response's own `Date` (the same clock) when there is one, and only otherwise
    from `now` (this host's clock, default the current time): a worker whose clock is off from the
    server's would wait that much too long or too little. A date in the past means now (0)."""
    value = (headers or {}).get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    sent = _http_date((headers or {}).get("date"))
    return max(0.0, (when - (sent or now or datetime.now(UTC))).total_seconds())


def _http_date(value: str | None) -> datetime | None:
    """An HTTP-date header as an aware datetime, or None when absent or unreadable."""
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: RFC 9110 says GMT
        when = when.replace(tzinfo=UTC)
    return when


def from_status(
    status: int, message: str, endpoint: str, headers: Mapping[str, str] | None = None
) -> BackendError:
    """The error for an HTTP error `status` (retryable or permanent, is_retryable_status); a retryable
    one carries the response's Retry-After when `headers` has one."""
    text = f"HTTP {status} from {endpoint}: {message}"
    if is_retryable_status(status):
        return RetryableError(text, status=status, endpoint=endpoint, retry_after_s=retry_after_s(headers))
    return PermanentError(text, status=status, endpoint=endpoint)


def map_exception(exc: BaseException, endpoint: str) -> BackendError:
    """Name the failure: retryable (overload, unavailability, timeouts) or permanent (bad request)."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, (hf_errors.InferenceTimeoutError, httpx2.TimeoutException)):
        return RetryableError(f"timed out calling {endpoint}: {exc}", endpoint=endpoint)
    if isinstance(exc, httpx2.TransportError):
        return RetryableError(f"cannot reach {endpoint}: {exc!r}", endpoint=endpoint)
    response = getattr(exc, "response", None)
    if response is None and exc.__cause__ is not None:
        # TGI-typed errors (OverloadedError, ValidationError...) are raised `from` the HTTP error.
        response = getattr(exc.__cause__, "response", None)
    if response is not None:
        return from_status(response.status_code, _short(exc), endpoint, getattr(response, "headers", None))
    if isinstance(exc, hf_errors.OverloadedError):
        return RetryableError(f"overloaded: {_short(exc)}", status=429, endpoint=endpoint)
    if isinstance(exc, hf_errors.ValidationError):
        return PermanentError(f"rejected: {_short(exc)}", status=422, endpoint=endpoint)
    if _unreadable(exc):
        # A 200 whose body is not JSON at all: the connection was cut mid-body, or a proxy or load
        # balancer answered with its own page. Nothing the model said is wrong; the next try (on
        # the next replica) usually succeeds. A body that parses but lacks what the protocol
        # promises stays permanent (`malformed`).
        return RetryableError(f"unreadable response body from {endpoint}: {_short(exc)}", endpoint=endpoint)
    if isinstance(exc, RecursionError):
        # huggingface_hub's response classes recurse forever on a NaN value (NaN != NaN), which
        # Python-based servers write as a bare `NaN` where a logprob could not be computed.
        return PermanentError(
            f"malformed response from {endpoint}: a NaN value in the JSON body, "
            "which huggingface_hub cannot parse",
            endpoint=endpoint,
        )
    return PermanentError(f"unexpected error from {endpoint}: {exc!r}", endpoint=endpoint)


def _unreadable(exc: BaseException) -> bool:
    """The exception, or what it was raised from, says the body could not be decoded at all."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (json.JSONDecodeError, UnicodeDecodeError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def malformed(exc: Exception, endpoint: str) -> PermanentError:
    """A 200 response whose body does not have the shape the protocol promises."""
    return PermanentError(
        f"malformed response from {endpoint}: {type(exc).__name__}: {_short(exc)}", endpoint=endpoint
    )


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


class EndpointRotation:
    """Round-robin over a model's replicas; a retry naturally lands on the next one."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self._cycle = itertools.cycle(list(endpoints))
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            return next(self._cycle)


def header_float(headers: Mapping[str, str], name: str, scale: float = 1.0) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw) * scale
    except ValueError:
        return None

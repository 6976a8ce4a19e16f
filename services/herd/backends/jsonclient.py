"""JSON over HTTP for the OpenAI-compatible backend: one urllib3 connection pool per endpoint.

Every attempt is one POST, and a worker's throughput is bound by its own CPU. Against the
endpoint double with 8 threads, huggingface_hub's shared httpx client took 0.65 ms of CPU per call and
a urllib3 pool 0.40 ms (docs/scale.md). The TGI backend and the context probes keep the httpx client.

What the httpx client did and this keeps: the same timeout for connecting and for each read, the same
trust store for HTTPS (httpx's own SSL context), gzip, connections reused per endpoint, no credential
but the model's own key (`headers`), and the same named errors (`transport.from_status`, "timed out
calling ...", "cannot reach ..."). With a proxy configured in the environment (`HTTP_PROXY`,
`HTTPS_PROXY`, `ALL_PROXY`, any case) every call goes through the httpx client instead, which
implements all of it (proxy logins, `NO_PROXY` address ranges, scheme-less proxy values): slower, but
exactly as before. What neither path does: follow redirects. httpx turned a redirected POST into a
GET; here a 3xx is a permanent error naming where the server points, so the herd file can be fixed.
"""

from __future__ import annotations

import importlib.metadata
import json
import urllib.request
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx2
import urllib3

from herd.backends import transport
from herd.backends.base import PermanentError, RetryableError

try:
    _VERSION = importlib.metadata.version("herd")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    _VERSION = "dev"


class JsonClient:
    """POST a JSON body, get the JSON body back, for one model (any of its endpoints).

    `max_in_flight`: connections kept per endpoint (a worker runs that many calls at once; more are
    opened when needed, and closed after). `timeout_s`: seconds to connect, and seconds to wait for
    each read of the response. Thread-safe: a worker's threads share it."""

    def __init__(self, *, max_in_flight: int, timeout_s: float, headers: Mapping[str, str]) -> None:
        self._timeout_s = timeout_s
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"herd/{_VERSION}",
            **headers,
        }
        self._via_httpx = proxy_configured()
        self._options: dict[str, Any] = {
            "maxsize": max_in_flight,
            "retries": False,
            "timeout": urllib3.Timeout(connect=timeout_s, read=timeout_s),
        }
        self._ssl_context = httpx2.create_ssl_context() if not self._via_httpx else None
        # URL -> (the pool of its origin, the path and query to ask it for): parsed on a URL's first
        # call only (PoolManager parsed every URL and looked its pool up by key, ~10% of the POST's CPU).
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}
        self._routes: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}

    def _route(self, url: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        # Filled from worker threads without a lock: a race only builds the same entry twice.
        route = self._routes.get(url)
        if route is None:
            parts = urlsplit(url)
            origin = f"{parts.scheme}://{parts.netloc}"
            pool = self._pools.get(origin)
            if pool is None:
                tls = {"ssl_context": self._ssl_context} if parts.scheme == "https" else {}
                pool = self._pools[origin] = urllib3.connection_from_url(origin, **self._options, **tls)
            route = self._routes[url] = (pool, urlunsplit(("", "", parts.path or "/", parts.query, "")))
        return route

    def post(self, url: str, endpoint: str, payload: Mapping[str, Any]) -> Any:
        """The decoded JSON body of a 2xx answer to POST `payload` at `url` (`endpoint`: the model's
        base URL, for messages). Raises RetryableError (timeouts, refused or dropped connections,
        retryable statuses) or PermanentError (other statuses, redirects); json.JSONDecodeError or
        UnicodeDecodeError for a body that is not JSON (the caller maps them)."""
        if self._via_httpx:
            return self._post_httpx(url, endpoint, payload)
        pool, target = self._route(url)
        try:
            response = pool.urlopen(
                "POST", target, body=json.dumps(payload).encode(), headers=self._headers, redirect=False
            )
        except urllib3.exceptions.NewConnectionError as exc:  # refused, unresolvable: not a timeout,
            # though urllib3 derives it from ConnectTimeoutError for backwards compatibility
            raise RetryableError(f"cannot reach {endpoint}: {exc!r}", endpoint=endpoint) from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise RetryableError(f"timed out calling {endpoint}: {exc}", endpoint=endpoint) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise RetryableError(f"cannot reach {endpoint}: {exc!r}", endpoint=endpoint) from exc
        if response.status >= 300:
            _refuse(response.status, response.data, response.headers, endpoint)
        return json.loads(response.data)

    def _post_httpx(self, url: str, endpoint: str, payload: Mapping[str, Any]) -> Any:
        """The same POST through huggingface_hub's shared httpx client (the caller maps its transport
        errors), for proxied environments."""
        response = transport.session().post(
            url, json=payload, headers=self._headers, timeout=self._timeout_s, follow_redirects=False
        )
        if response.status_code >= 300:
            _refuse(response.status_code, response.content, response.headers, endpoint)
        return response.json()


def proxy_configured() -> bool:
    """Whether the environment names a proxy (`<scheme>_proxy`/`all_proxy`, either case), which httpx
    would use for some URL: then JsonClient posts through httpx, which applies it exactly."""
    return any(scheme != "no" and value for scheme, value in urllib.request.getproxies().items())


def _refuse(status: int, body: bytes, headers: Mapping[str, str], endpoint: str) -> NoReturn:
    """Raise the error for a non-2xx answer: `transport.from_status` for an error status, a permanent
    error naming where a redirect points (neither path follows one)."""
    if status >= 400:
        raise transport.from_status(status, body.decode("utf-8", "replace")[:300], endpoint, headers)
    raise PermanentError(
        f"HTTP {status} from {endpoint}: redirected to {headers.get('location') or '(no Location header)'}; "
        "set the model's endpoint to the URL the server names",
        status=status,
        endpoint=endpoint,
    )

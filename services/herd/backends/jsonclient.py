"""JSON over HTTP for the OpenAI-compatible backend: one urllib3 connection pool per model.

Every attempt is one POST, and a worker's throughput is bound by its own CPU (issue 12). Against the
endpoint double with 8 threads, huggingface_hub's shared httpx client took 0.65 ms of CPU per call and
urllib3 0.46 ms (benchmarks/throughput.py, docs/scale.md). The TGI backend and the context probes keep
the httpx client (InferenceClient's, for TGI's typed errors and timing headers).

What the httpx client did and this keeps: the same timeout for connecting and for each read,
`HTTP(S)_PROXY`/`ALL_PROXY`/`NO_PROXY` from the environment, connections reused per endpoint, no
credential but the model's own key (`headers`), and the same named errors (`transport.from_status`,
"timed out calling ...", "cannot reach ..."). What it does not: follow redirects. httpx turned a
redirected POST into a GET; here a 3xx is a permanent error naming where the server points, so the
herd file can be fixed.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3

from herd.backends import transport
from herd.backends.base import PermanentError, RetryableError


class JsonClient:
    """POST a JSON body, get the JSON body back, for one model's endpoints.

    `max_in_flight`: connections kept per endpoint (a worker runs that many calls at once; more are
    opened when needed, and closed after). `timeout_s`: seconds to connect, and seconds to wait for
    each read of the response. Thread-safe: a worker's threads share it."""

    def __init__(
        self, endpoints: Sequence[str], *, max_in_flight: int, timeout_s: float, headers: Mapping[str, str]
    ) -> None:
        timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}
        self._options: dict[str, Any] = {"maxsize": max_in_flight, "retries": False, "timeout": timeout}
        # URL -> (pool, what to ask it for): a pool per endpoint's origin, built here so no call
        # parses a URL or looks a pool up by key (PoolManager did both, ~10% of the POST's CPU).
        self._routes: dict[str, tuple[urllib3.connectionpool.HTTPConnectionPool | urllib3.ProxyManager, str]]
        self._routes = {}
        self._pools: dict[str, urllib3.connectionpool.HTTPConnectionPool | urllib3.ProxyManager] = {}
        for url in endpoints:
            self._route(url)

    def _route(
        self, url: str
    ) -> tuple[urllib3.connectionpool.HTTPConnectionPool | urllib3.ProxyManager, str]:
        route = self._routes.get(url)
        if route is None:
            parts = urlsplit(url)
            origin = f"{parts.scheme}://{parts.netloc}"
            pool = self._pools.get(origin)
            if pool is None:
                proxy = proxy_for(url)
                pool = self._pools[origin] = (
                    urllib3.ProxyManager(proxy, **self._options)
                    if proxy is not None
                    else urllib3.connection_from_url(origin, **self._options)
                )
            # A proxy is asked for the whole URL; a direct pool for the path (and query).
            target = (
                url
                if isinstance(pool, urllib3.ProxyManager)
                else urlunsplit(("", "", parts.path or "/", parts.query, ""))
            )
            route = self._routes[url] = (pool, target)
        return route

    def post(self, url: str, endpoint: str, payload: Mapping[str, Any]) -> Any:
        """The decoded JSON body of a 2xx answer to POST `payload` at `url` (`endpoint`: the model's
        base URL, for messages). Raises RetryableError (timeouts, refused or dropped connections,
        retryable statuses) or PermanentError (other statuses, redirects); json.JSONDecodeError or
        UnicodeDecodeError for a body that is not JSON (the caller maps them)."""
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
        if response.status >= 400:
            text = response.data.decode("utf-8", "replace")[:300]
            raise transport.from_status(response.status, text, endpoint, response.headers)
        if response.status >= 300:
            where = response.headers.get("location", "(no Location header)")
            raise PermanentError(
                f"HTTP {response.status} from {endpoint}: redirected to {where}; "
                "set the model's endpoint to the URL the server names",
                status=response.status,
                endpoint=endpoint,
            )
        return json.loads(response.data)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (`<scheme>_proxy`, else `all_proxy`; none when
    `no_proxy` covers its host), as httpx and urllib read them; None: connect directly."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    return proxy

"""Resolve where Postgres and Redis are: configured URLs win, else the embedded servers under HERD_HOME."""

from __future__ import annotations

from herd import redact
from herd.settings import Settings, get_settings


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return _secret_url(settings.database_url)
    from herd.embedded.servers import ensure_postgres  # noqa: PLC0415 - the embedded servers only when no URL is configured

    return _secret_url(ensure_postgres(settings.home))


def broker_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.broker_url:
        return _secret_url(settings.broker_url)
    from herd.embedded.servers import ensure_redis  # noqa: PLC0415 - the embedded servers only when no URL is configured

    return _secret_url(ensure_redis(settings.home))


def _secret_url(url: str) -> str:
    # Its password is hidden from every log line and error Herd writes from now on (herd/redact.py).
    redact.register_url(url)
    return url

"""Resolve where Postgres and Redis are: configured URLs win, else the embedded servers under HERD_HOME."""

from __future__ import annotations

from herd.settings import Settings, get_settings


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    from herd.local.embedded import ensure_postgres

    return ensure_postgres(settings.home)


def broker_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.broker_url:
        return settings.broker_url
    from herd.local.embedded import ensure_redis

    return ensure_redis(settings.home)

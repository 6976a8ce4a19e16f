"""Bearer API keys (`herd keys create/list/revoke`): random tokens, stored as their SHA-256.

A token is `sk-herd-` and 43 URL-safe characters (256 random bits from `secrets`). Only its SHA-256
is stored: a fast hash is enough for a secret this long (guessing it is hopeless, hashed or not), and
it lets the server find the key with one indexed lookup instead of checking a slow password hash
against every key. The token is shown once, at creation. A key belongs to an owner; everything a key
creates belongs to that owner, and other owners' keys see none of it (docs/batch-api.md).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from herd.errors import UserError

PREFIX = "sk-herd-"
# Characters of a token kept for display: the prefix and 8 random ones.
SHOWN = len(PREFIX) + 8


class KeysError(UserError, ValueError):
    """A `herd keys` request that cannot be done: no such key, an ambiguous prefix, a bad owner name."""


@dataclass(frozen=True)
class Key:
    id: int
    owner: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(conn: psycopg.Connection, owner: str) -> tuple[Key, str]:
    """A new key for `owner`: (the key, its token). The token is not stored and cannot be shown again."""
    owner = owner.strip()
    if not owner or len(owner) > 200:
        raise KeysError("the owner must be a name of 1 to 200 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    with conn.cursor(row_factory=class_row(Key)) as cur:
        cur.execute(
            """INSERT INTO api_keys (owner, prefix, sha256) VALUES (%s, %s, %s)
               RETURNING id, owner, prefix, created_at, revoked_at""",
            (owner, token[:SHOWN], digest(token)),
        )
        key = cur.fetchone()
    if key is None:
        raise RuntimeError("INSERT ... RETURNING gave no row")
    return key, token


def listed(conn: psycopg.Connection) -> list[Key]:
    with conn.cursor(row_factory=class_row(Key)) as cur:
        cur.execute("SELECT id, owner, prefix, created_at, revoked_at FROM api_keys ORDER BY id")
        return cur.fetchall()


def revoke(conn: psycopg.Connection, ident: str) -> list[Key]:
    """Revoke the key with id `ident`, or the keys whose displayed prefix starts with it. Revoking a
    revoked key changes nothing. Raises KeysError when nothing matches."""
    by_id = ident.isdigit()
    with conn.cursor(row_factory=class_row(Key)) as cur:
        cur.execute(
            f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
                WHERE {"id = %s" if by_id else "prefix LIKE %s || '%%'"}
                RETURNING id, owner, prefix, created_at, revoked_at""",
            (int(ident) if by_id else ident,),
        )
        keys = cur.fetchall()
    if not keys:
        raise KeysError(f"no key with id or prefix {ident!r} (`herd keys list` shows them)")
    if not by_id and len(keys) > 1:
        conn.rollback()
        raise KeysError(f"{len(keys)} keys start with {ident!r}: give more of the prefix, or the key's id")
    return keys


@dataclass(frozen=True)
class Authentication:
    """Who a request's token belongs to, or why it is refused (`problem`)."""

    owner: str | None
    problem: str | None = None


def authenticate(conn: psycopg.Connection, authorization: str | None) -> Authentication:
    """The owner of the bearer token in an `Authorization` header value."""
    if not authorization:
        return Authentication(None, "You didn't provide an API key: send it as `Authorization: Bearer KEY`.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Authentication(None, "The Authorization header must be `Bearer KEY`.")
    row = conn.execute(
        "SELECT owner, revoked_at FROM api_keys WHERE sha256 = %s", (digest(token.strip()),)
    ).fetchone()
    if row is None:
        return Authentication(None, "Incorrect API key provided.")
    if row[1] is not None:
        return Authentication(None, "This API key has been revoked.")
    return Authentication(str(row[0]))

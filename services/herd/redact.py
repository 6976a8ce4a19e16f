"""Credentials never reach logs, stored errors or the terminal.

Credentials come only from the environment (HERD_DATABASE_URL, HERD_BROKER_URL, each model's
`api_key_env`, FLOWER_BASIC_AUTH), but they can travel on: inside a URL in an error message (an
endpoint written `https://user:password@host`, a malformed database URL that psycopg or SQLAlchemy
quotes back), or as a key a server echoes. So every text that leaves the process through Herd is
passed through `redact`: URLs lose their password and secret-looking query parameters, and every
secret Herd has read (`register`) is replaced by `***`. `install_log_redaction` does the same for
every log record of the process, tracebacks included.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_PARAMS = re.compile(r"(pass|secret|token|key|sig|auth|credential)", re.IGNORECASE)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_secrets: set[str] = set()
_lock = threading.Lock()
MIN_SECRET = 4  # shorter values would mask ordinary words


def register(secret: str | None) -> None:
    """Remember a credential Herd has read, so `redact` hides it wherever it turns up."""
    if secret and len(secret) >= MIN_SECRET:
        with _lock:
            _secrets.add(secret)


def register_url(url: str | None) -> None:
    """Remember the password of a URL (database, broker)."""
    if url:
        try:
            register(urlsplit(url).password)
        except ValueError:
            pass  # not a URL we can parse; `redact` still masks its userinfo


@functools.lru_cache(maxsize=1024)  # a pure function of the URL; a worker masks its few endpoints per attempt
def mask_url(url: str) -> str:
    """`url` without its password and with the values of secret-looking query parameters masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _mask_userinfo(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAMS.search(name) for name, _ in pairs):
            query = urlencode([(n, MASK if SECRET_PARAMS.search(n) else v) for n, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_userinfo(text: str) -> str:
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", rf"\1{MASK}@", text)


def redact(text: str) -> str:
    """`text` with every URL masked (`mask_url`) and every registered secret replaced by ***."""
    if "://" in text:
        text = _URL.sub(lambda m: mask_url(m.group()), text)
        text = _mask_userinfo(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process from now on, message and traceback, whatever logger
    and handler it goes to (a record factory, since Celery configures its own handlers)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def redacting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            record.msg, record.args = redact(record.getMessage()), None
            if record.exc_info and record.exc_info[0] is not None:
                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is left for logging to report
            pass
        return record

    logging.setLogRecordFactory(redacting)

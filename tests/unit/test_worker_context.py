"""The worker's pool check: a round trip only for a connection that sat idle, and the per-task log lines."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import pytest

from herd.cli.workers import PER_TASK_LOGGERS, quiet_task_lines
from herd_workers.context import IdleCheck


class FakeConnection:
    autocommit = True

    def __init__(self) -> None:
        self.pings = 0

    def execute(self, query: str) -> None:
        assert query == ""  # ConnectionPool.check_connection's empty statement
        self.pings += 1


def test_a_connection_is_checked_when_new_or_idle_but_not_when_just_used() -> None:
    check = IdleCheck(idle_s=0.05)
    fake = FakeConnection()
    conn = cast(Any, fake)  # duck-typed: the check uses only autocommit and execute
    check(conn)
    assert fake.pings == 1  # never used: checked
    check.used(conn)
    check(conn)
    assert fake.pings == 1  # used a moment ago: no round trip
    time.sleep(0.06)
    check(conn)
    assert fake.pings == 2  # idle longer than idle_s: checked again


@pytest.mark.parametrize(
    ("level", "quiet"), [("info", True), ("INFO", True), ("warning", True), ("debug", False)]
)
def test_celery_per_task_lines_are_dropped_below_debug(level: str, quiet: bool) -> None:
    saved = {name: logging.getLogger(name).level for name in PER_TASK_LOGGERS}
    try:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        quiet_task_lines(level)
        for name in PER_TASK_LOGGERS:
            assert (logging.getLogger(name).level == logging.WARNING) is quiet
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)

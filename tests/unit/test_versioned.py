"""Versioned policies and routers (herd/policy/versioned.py): numbering per task, one active version,
rollback, and the one-line error for a version that does not exist. Real Postgres."""

from __future__ import annotations

import threading

import psycopg
import pytest

from herd.input_errors import InputError
from herd.policy import versions as policies
from tests.support.harness import Services


def test_versions_count_per_task_and_one_is_active(db: psycopg.Connection) -> None:
    assert policies.record(db, "qa", "a: 1\n", None, {}) == 1
    assert policies.record(db, "qa", "a: 2\n", None, {}, activate=False) == 2
    assert policies.record(db, "other", "b: 1\n", None, {}) == 1
    assert [(v.task, v.version, v.active) for v in policies.versions(db)] == [
        ("other", 1, True),
        ("qa", 1, True),
        ("qa", 2, False),
    ]
    assert policies.activate(db, "qa", 2).active
    assert [v.version for v in policies.versions(db, "qa") if v.active] == [2]
    policies.activate(db, "qa", 1)  # rollback
    assert [v.version for v in policies.versions(db, "qa") if v.active] == [1]


def test_a_missing_version_is_one_line_naming_the_ones_there_and_changes_nothing(
    db: psycopg.Connection,
) -> None:
    policies.record(db, "qa", "a: 1\n", None, {})
    policies.record(db, "qa", "a: 2\n", None, {}, activate=False)
    with pytest.raises(InputError, match=r"^task 'qa' has no policy version 7; its versions: 1, 2$"):
        policies.activate(db, "qa", 7)
    assert [v.version for v in policies.versions(db, "qa") if v.active] == [1]
    with pytest.raises(InputError, match=r"its versions: none \(run `herd calibrate`\)$"):
        policies.get(db, "nothing", 1)


def test_deactivate_says_whether_a_version_was_active(db: psycopg.Connection) -> None:
    policies.record(db, "qa", "a: 1\n", None, {})
    assert policies.deactivate(db, "qa") is True
    assert policies.deactivate(db, "qa") is False
    assert not any(v.active for v in policies.versions(db, "qa"))


def test_concurrent_recorders_never_take_the_same_number(services: Services, db: psycopg.Connection) -> None:
    errors: list[BaseException] = []

    def record(i: int) -> None:
        try:
            with psycopg.connect(services.database_url, autocommit=True) as conn, conn.transaction():
                policies.record(conn, "qa", f"n: {i}\n", None, {})
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(v.version for v in policies.versions(db, "qa")) == list(range(1, 9))

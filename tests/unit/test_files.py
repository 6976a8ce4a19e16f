"""Atomic writes and retry delays: the helpers every writer and retrier shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from herd.files import atomic_text
from herd.herdfile.model import Retries


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with atomic_text(target) as handle:
        handle.write("new\r\n")
        assert target.read_text() == "old\n"  # readers see the old file until the rename
    assert target.read_bytes() == b"new\r\n"  # newline translation off: CSV's own line ends stay
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_text(target) as handle:
        handle.write("half")
        raise RuntimeError("the database went away")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_retry_delays_have_full_jitter_under_the_cap() -> None:
    policy = Retries(max=5, backoff_s=1.0, backoff_max_s=4.0)
    delays = [policy.delay_s(tries) for tries in range(6) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(policy.delay_s(0) for _ in range(200)) <= 1.0
    assert max(delays) > 3.0  # the cap is reached, not the uncapped 2**5

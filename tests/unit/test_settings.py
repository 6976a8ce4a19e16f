"""herd/settings.py: a HERD_* variable Herd cannot use is a UserError naming the variable."""

from __future__ import annotations

import pytest

from herd.errors import UserError
from herd.settings import SettingsError, get_settings


def test_a_bad_variable_is_named_with_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERD_DISPATCH_WINDOW", "abc")
    monkeypatch.setenv("HERD_API_POLL_S", "-1")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError) as raised:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert isinstance(raised.value, UserError)
    lines = str(raised.value).splitlines()
    assert lines == [
        "HERD_DISPATCH_WINDOW: Input should be a valid integer, unable to parse string as an integer "
        "(got 'abc')",
        "HERD_API_POLL_S: Input should be greater than 0 (got '-1')",
    ]

"""The harness tests and benchmarks share (tests/support/harness.py): one reset that empties every
ledger table, herd files Herd itself accepts, and an environment a developer's shell cannot change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from herd.herdfile.model import load_herd
from herd.ledger.schema import metadata
from tests.support.endpoint import EndpointDouble
from tests.support.harness import REPO, TABLES, Services, herd_env, herd_yaml, with_pythonpath


def test_the_reset_reaches_every_ledger_table() -> None:
    # TRUNCATE ... CASCADE empties every table with a foreign key into a truncated one, transitively.
    reached = set(TABLES)
    grew = True
    while grew:
        grew = False
        for table in metadata.tables.values():
            into = {fk.column.table.name for fk in table.foreign_keys}
            if table.name not in reached and into & reached:
                reached.add(table.name)
                grew = True
    assert set(metadata.tables) - reached == set(), "add the table to harness.TABLES"
    assert set(TABLES) <= set(metadata.tables), "harness.TABLES names a table the schema does not have"


def test_the_three_tier_herd_is_what_herd_loads(tmp_path: Path) -> None:
    with EndpointDouble() as double:
        path = tmp_path / "herd.yaml"
        path.write_text(herd_yaml(double, retries=1, timeout_s=2.0))
        herd = load_herd(path)
        assert [t.model for t in herd.route("qa")] == ["small", "medium", "large"]
        assert [t.prompt_mode for t in herd.route("qa")] == ["chat", "completion", "completion"]
        assert [m.protocol for m in herd.models.values()] == ["openai", "tgi", "openai"]
        assert herd.models["small"].endpoints == [f"{double.model_url('small')}/v1"]
        assert herd.models["medium"].endpoints == [double.model_url("medium")]
        assert {(m.retries.max, m.timeout_s) for m in herd.models.values()} == {(1, 2.0)}


def test_a_one_model_herd_on_several_doubles(tmp_path: Path) -> None:
    urls = ["http://127.0.0.1:8001/m/small", "http://127.0.0.1:8002/m/small"]
    path = tmp_path / "herd.yaml"
    path.write_text(herd_yaml({"small": urls}, max_in_flight=8, timeout_s=30, retries=3))
    herd = load_herd(path)
    assert [t.model for t in herd.route("qa")] == ["small"]
    small = herd.models["small"]
    assert small.endpoints == [f"{u}/v1" for u in urls]
    assert (small.max_in_flight, small.timeout_s, small.retries.max, small.escalation) == (8, 30.0, 3, None)


@pytest.mark.parametrize("models", [[], ["medium"], ["small", "large"]])
def test_models_are_a_prefix_of_the_tiers(models: list[str]) -> None:
    with pytest.raises(ValueError, match="prefix"):
        herd_yaml(dict.fromkeys(models, "http://127.0.0.1:9"))


def test_herd_env_drops_the_shells_herd_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERD_TASK_EVENTS", "1")
    monkeypatch.setenv("HERD_DATABASE_URL", "postgresql://elsewhere/db")
    monkeypatch.setenv("PYTHONPATH", "")
    svc = Services("postgresql://here/db", "redis://here/0", tmp_path)
    env = herd_env(svc, tmp_path / "herd.yaml", HERD_DISPATCH_WINDOW="5")
    assert "HERD_TASK_EVENTS" not in env
    assert env["HERD_DATABASE_URL"] == "postgresql://here/db"
    assert env["HERD_HERD_FILE"] == str(tmp_path / "herd.yaml")
    assert env["HERD_DISPATCH_WINDOW"] == "5"
    assert env["PYTHONPATH"] == str(REPO)  # no empty entry: that would put the cwd on sys.path
    assert "HERD_HERD_FILE" not in herd_env(svc, None)


def test_with_pythonpath_puts_its_folders_first() -> None:
    env = with_pythonpath({"PYTHONPATH": f"/b{os.pathsep}{os.pathsep}/c"}, [Path("/a")])
    assert env["PYTHONPATH"].split(os.pathsep) == ["/a", "/b", "/c"]

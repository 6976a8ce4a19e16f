"""herd/errors.py: every exception class Herd defines is a UserError or a ServiceError, found by
importing every module of the `herd` and `herd_workers` packages, and the tree's module is a leaf."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import herd
import herd_workers
from herd.errors import HerdError, ServiceError, UserError
from tests.support.harness import REPO


def _modules(package: ModuleType) -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    # __main__ runs the CLI when imported.
    return [package, *(importlib.import_module(n) for n in names if not n.endswith(".__main__"))]


def herd_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of herd or herd_workers, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for package in (herd, herd_workers):
        for module in _modules(package):
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


FOUND = herd_exceptions()

# A few whose kind decides an exit status someone relies on (docs/errors.md).
KINDS: dict[str, type[HerdError]] = {
    "herd.herdfile.model.ConfigError": UserError,
    "herd.herdfile.yamllines.YamlError": UserError,
    "herd.input_errors.InputError": UserError,
    "herd.ledger.jobs.UnknownJobError": UserError,
    "herd.ledger.db.SchemaError": UserError,  # run `herd migrate`
    "herd.policy.confidence.NothingToCalibrateError": UserError,
    "herd.backends.base.BackendError": ServiceError,
    "herd.backends.base.MissingLogprobsError": ServiceError,
    "herd.embedded.daemons.ProcessError": ServiceError,
    "herd.quality.scorers.JudgeError": ServiceError,
}


def test_the_walk_finds_herds_exceptions() -> None:
    # Guards the walk itself: were it to find nothing, the tests below would pass on nothing.
    assert set(KINDS) <= set(FOUND)
    assert len(FOUND) >= 30, sorted(FOUND)


@pytest.mark.parametrize("name", sorted(FOUND))
def test_every_herd_exception_is_a_user_or_a_service_error(name: str) -> None:
    cls = FOUND[name]
    if cls in (HerdError, UserError, ServiceError):
        return
    assert issubclass(cls, HerdError), f"{name} derives from {[b.__name__ for b in cls.__mro__[1:]]}"
    assert issubclass(cls, UserError) != issubclass(cls, ServiceError), f"{name} is both or neither"


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_kind_of_each_error_that_sets_an_exit_status(name: str) -> None:
    assert issubclass(FOUND[name], KINDS[name])


def test_the_builtin_bases_stay_for_except_clauses_written_against_them() -> None:
    from herd.embedded.daemons import ProcessError
    from herd.herdfile.model import ConfigError
    from herd.ledger.jobs import UnknownJobError

    assert issubclass(ConfigError, ValueError)
    assert issubclass(UnknownJobError, LookupError)
    assert issubclass(ProcessError, RuntimeError)


def test_the_error_module_imports_nothing_from_herd() -> None:
    code = "import sys, herd.errors; print(sorted(m for m in sys.modules if m.startswith('herd')))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['herd', 'herd.errors']"

"""Stored references the current herd file no longer backs: one check for every kind of stored version.

Policy versions and router versions (Postgres) name models and a task; prompts waiting in the ledger
name the model whose queue they wait on. The herd file can change under them (a model renamed,
`large` -> `llama-70b`, a task dropped). A name it does not define has no worker: a prompt sent there
would wait on a queue nobody reads, and the stale sweep would re-send it there forever.

`stale_reference` is the one check every point of use calls (activation, `herd submit`, the worker's
escalation step, the budget's release, the pump's sweep, `herd status`/`report`, the metrics
exporter, a worker's start), so they all refuse the same thing with the same line, naming both the
stored version and what the herd file lacks (docs/reliability.md, "References that go stale").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from herd.herdfile.model import HerdConfig

KINDS = ("policy", "router", "prompts")  # the `kind` label of herd_stale_references: bounded


@dataclass(frozen=True)
class StaleReference:
    """`holder` (e.g. "the active policy v1 of task 'sentiment'") names `missing` (e.g. "model
    'large'"), which the herd file lacks. `kind` is one of KINDS; `str()` is the one-line reason."""

    kind: str
    task: str
    holder: str
    missing: tuple[str, ...]
    lacks: str = "which the herd file does not define"
    hint: str = ""

    def __str__(self) -> str:
        hint = f": {self.hint}" if self.hint else ""
        return f"{self.holder} names {', '.join(self.missing)}, {self.lacks}{hint}"


def _names(noun: str, names: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"{noun} {name!r}" for name in dict.fromkeys(names))


def stale_reference(
    herd: HerdConfig,
    kind: str,
    holder: str,
    task: str,
    models: Iterable[str],
    *,
    route_only: bool = False,
    hint: str = "",
) -> StaleReference | None:
    """None when `task` and every one of `models` exist in `herd`; else the StaleReference naming them.

    `route_only`: the models must also be on the task's route in the herd file (a router picks an
    entry model, and the cascade climbs the route from there)."""
    if task not in herd.tasks:
        return StaleReference(kind, task, holder, _names("task", [task]), hint=hint)
    models = list(models)
    unknown = [m for m in models if m not in herd.models]
    if unknown:
        return StaleReference(kind, task, holder, _names("model", unknown), hint=hint)
    if route_only:
        route = [step.model for step in herd.route(task)]
        off = [m for m in models if m not in route]
        if off:
            lacks = f"not on the task's route {route} in the herd file"
            return StaleReference(kind, task, holder, _names("model", off), lacks, hint)
    return None

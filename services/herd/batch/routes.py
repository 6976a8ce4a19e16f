"""What an OpenAI request's `body.model` names in a herd file.

Three kinds of name, looked up in this order (docs/batch-api.md):
1. a key of the herd file's `routes:` (e.g. `herd: chat`), which stands for its target;
2. a task of kind `chat`: the task's route answers, its active policy version and router decide;
3. a model of the herd: that model answers alone (a `direct` job, no cascade), under the herd file's
   first chat task (its per-model `prompt_mode` applies).
Anything else is unknown, an error for that request's line.
"""

from __future__ import annotations

from dataclasses import dataclass

from herd.errors import UserError
from herd.herdfile.model import HerdConfig, ModelConfig


class UnknownModelError(UserError, LookupError):
    """`body.model` names nothing the herd file serves; the message lists what it does serve."""


@dataclass(frozen=True)
class Target:
    """Where a request goes: `task` (a chat task) and, for a model asked alone, `model`."""

    task: str
    model: str | None = None

    @property
    def kind(self) -> str:
        """The job kind (herd/cascade/pipeline.py): 'direct' for a model alone, else 'live'."""
        return "direct" if self.model is not None else "live"

    def describe(self) -> str:
        return f"model {self.model} alone" if self.model is not None else f"the {self.task} task's cascade"


def chat_tasks(herd: HerdConfig) -> list[str]:
    return [name for name, task in herd.tasks.items() if task.kind == "chat"]


def served_names(herd: HerdConfig) -> list[str]:
    """Every `model` name a request may use, routes first."""
    tasks = chat_tasks(herd)
    return [*herd.routes, *tasks, *(herd.models if tasks else ())]


def resolve(herd: HerdConfig, name: str) -> Target:
    """The target `name` stands for. Raises UnknownModelError naming what the herd file serves."""
    tasks = chat_tasks(herd)
    target = herd.routes.get(name, name)
    if target in tasks:
        return Target(task=target)
    if target in herd.models and tasks:
        return Target(task=tasks[0], model=target)
    served = served_names(herd)
    if not served:
        raise UnknownModelError(
            f"model {name!r}: the herd file has no task of kind chat, so it serves no OpenAI requests "
            "(docs/batch-api.md)"
        )
    raise UnknownModelError(f"model {name!r} is not served by this herd (it serves: {', '.join(served)})")


def models_of(herd: HerdConfig, target: Target) -> list[ModelConfig]:
    """The models that may answer a request sent to `target` (its route, or the model alone)."""
    if target.model is not None:
        return [herd.models[target.model]]
    return [herd.models[tier.model] for tier in herd.route(target.task)]

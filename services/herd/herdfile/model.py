"""The herd file: models, their endpoints and costs, escalation graph and task templates.

A bad file fails at start with `file:line: key.path: what is wrong`, never in the middle of a run.
"""

from __future__ import annotations

import difflib
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from herd.errors import UserError
from herd.herdfile.yamllines import YamlError, line_of, load_with_lines

Protocol = Literal["tgi", "openai"]
PromptMode = Literal["chat", "completion"]
Measure = Literal["first_token_margin", "mean_entropy", "max_entropy", "mean_nll"]
# `chat`: OpenAI chat/completions request bodies sent as they come (herd/cascade/requests.py), no template.
TaskKind = Literal["summarize", "classify", "extract", "qa", "template", "chat"]

# A margin is a confidence (escalate when it is LOW); the others are uncertainties (escalate when HIGH).
CONFIDENCE_MEASURES: frozenset[str] = frozenset({"first_token_margin"})


class ConfigError(UserError, ValueError):
    """The herd file is invalid; the message names file, line and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationParams(_Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=32768)
    stop: list[str] = Field(default_factory=list)
    # Greedy by default: TGI computes logprobs after temperature/top_p, which would distort uncertainty.
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    # Alternatives per token; TGI caps top_n_tokens at 5 unless launched with --max-top-n-tokens.
    top_logprobs: int = Field(default=5, ge=2, le=20)


class Gpus(_Strict):
    type: str = "cpu"
    count: int = Field(default=1, ge=0)
    usd_per_hour: float = Field(default=0.0, ge=0.0)


class Retries(_Strict):
    max: int = Field(default=3, ge=0, le=50)
    backoff_s: float = Field(default=1.0, ge=0.0)
    backoff_max_s: float = Field(default=60.0, ge=0.0)

    def delay_s(self, tries: int, at_least_s: float | None = None) -> float:
        """Seconds to wait before try `tries + 1`: exponential backoff with full jitter, uniform in
        [0, min(backoff_max_s, backoff_s * 2**tries)] (the AWS Architecture Blog's "full jitter":
        retries from many workers spread out instead of arriving together).

        `at_least_s`: the server's Retry-After (RFC 9110 §10.2.3). The delay is then at least that,
        plus up to one second of jitter so the waiting workers do not return in one burst, and never
        more than `backoff_max_s`: the retry is a delayed broker message, and a delay past the
        broker's visibility timeout would be redelivered early anyway."""
        delay = random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**tries))
        if at_least_s is not None and at_least_s > delay:
            delay = at_least_s + random.uniform(0, 1.0)
        return min(delay, self.backoff_max_s)


class Escalation(_Strict):
    next: str | None = None
    measure: Measure = "first_token_margin"
    threshold: float


DEFAULT_CRITIQUE = (
    "Review your previous answer for mistakes, omissions and unclear parts. "
    "If it needs no change, reply exactly: NO ISSUES. Otherwise list the problems briefly."
)
DEFAULT_REFINE = (
    "Feedback on your previous answer:\n{critique}\n\n"
    "Write an improved answer that fixes these problems. Reply with the answer only, in the same format."
)


class Refine(_Strict):
    """Untargeted self-refinement (Shashidhar et al. 2023): the model critiques its own answer with a
    generic prompt, no task-specific rubric, then rewrites it; it stops early on NO ISSUES."""

    rounds: int = Field(ge=1, le=10)
    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    critique: str = DEFAULT_CRITIQUE
    refine: str = DEFAULT_REFINE

    @field_validator("refine")
    @classmethod
    def _mentions_critique(cls, template: str) -> str:
        if "{critique}" not in template:
            raise ValueError("the refine prompt must include {critique}")
        return template


class ModelConfig(_Strict):
    protocol: Protocol
    endpoints: list[str] = Field(min_length=1)
    # The OpenAI `model` field. TGI's Messages API treats anything but "tgi" as a LoRA adapter id.
    served_model: str | None = None
    # Name of the environment variable holding the endpoints' API key (e.g. vLLM's --api-key), sent as
    # `Authorization: Bearer`. Never the machine's Hugging Face token (see herd/backends/http.py).
    api_key_env: str | None = Field(default=None, min_length=1)
    prompt_mode: PromptMode = "chat"
    generation: GenerationParams = GenerationParams()
    max_in_flight: int = Field(default=4, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    retries: Retries = Retries()
    gpus: Gpus = Gpus()
    escalation: Escalation | None = None
    refine: Refine | None = None
    # The model's input limit in tokens (prompt plus generated tokens). None: asked of the server
    # when a task with a `long_documents` policy first needs it (herd/backends/context.py).
    context_tokens: int | None = Field(default=None, ge=64)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("endpoints")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must be an http(s) URL")
        return [url.rstrip("/") for url in urls]


class TaskModelOverride(_Strict):
    """Per task and model: prompt mode and escalation can differ from the model's defaults."""

    prompt_mode: PromptMode | None = None
    next: str | None = None
    measure: Measure | None = None
    threshold: float | None = None


class LongDocuments(_Strict):
    """What to do with a document longer than a model's context (docs/documents.md).

    `fail`: the attempt fails with the document's and the model's token counts named; `truncate`:
    keep the head (`keep: head`) or the head and tail (`keep: head_tail`) that fit; `chunk`: split on
    paragraph and sentence boundaries with `overlap_tokens` of overlap, answer each chunk, combine."""

    policy: Literal["fail", "truncate", "chunk"] = "fail"
    keep: Literal["head", "head_tail"] = "head"
    overlap_tokens: int = Field(default=64, ge=0, le=4096)
    # A bound on one document's fan-out: past it the document is truncated to max_chunks chunks.
    max_chunks: int = Field(default=64, ge=2, le=10_000)
    # Tokens kept free besides the template and max_new_tokens: a chat template's own tokens and the
    # error of an estimated count (herd/backends/context.py).
    margin_tokens: int = Field(default=32, ge=0)


class TaskConfig(_Strict):
    kind: TaskKind
    labels: list[str] = Field(default_factory=list)
    # Other spellings a model may answer with, per label (used when scoring classification).
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    fields: list[str] = Field(default_factory=list)
    instruction: str | None = None
    system: str | None = None
    chat: str | None = None
    completion: str | None = None
    entry: str | None = None
    models: dict[str, TaskModelOverride] = Field(default_factory=dict)
    # None: no token counting at all (a too-long document fails at the server).
    long_documents: LongDocuments | None = None


class AuditConfig(_Strict):
    """Every live job's default audit (`herd submit --audit` overrides it; docs/policy.md): a seeded
    share `rate` of the job's prompts is also answered by `reference` alone (default: the last model
    of each task's route)."""

    rate: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)
    reference: str | None = None


class HerdConfig(_Strict):
    models: dict[str, ModelConfig] = Field(min_length=1)
    tasks: dict[str, TaskConfig] = Field(min_length=1)
    entry: str | None = None
    audit: AuditConfig | None = None
    # Names an OpenAI batch request's `body.model` may use, each for a `chat` task (its route, active
    # policy and router decide) or a model (that model alone). A chat task's own name and every model's
    # name work without an entry here (herd/batch/routes.py, docs/batch-api.md).
    routes: dict[str, str] = Field(default_factory=dict)
    # Every (task, model)'s tier, computed once when the config is made (it is frozen): a worker asks
    # once per message. Filled for all pairs, so two equal configs hold equal caches.
    _tiers: dict[tuple[str, str], TaskTier] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        self._tiers = {(task, model): self._tier(task, model) for task in self.tasks for model in self.models}

    def tier(self, task: str, model: str) -> TaskTier:
        """How `model` runs `task`: its prompt mode and where an uncertain answer goes next.
        Raises KeyError for a task or model the herd file does not name."""
        known = self._tiers.get((task, model))
        # A task or model not in the file: _tier raises the KeyError naming it (e.g. a herd file that
        # lost a running job's task), which the worker records as the step's reason.
        return known if known is not None else self._tier(task, model)

    def _tier(self, task: str, model: str) -> TaskTier:
        cfg = self.models[model]
        override = self.tasks[task].models.get(model, TaskModelOverride())
        esc = cfg.escalation
        next_model = override.next if "next" in override.model_fields_set else (esc.next if esc else None)
        threshold = override.threshold if override.threshold is not None else (esc.threshold if esc else None)
        measure = override.measure or (esc.measure if esc else "first_token_margin")
        return TaskTier(
            model=model,
            prompt_mode=override.prompt_mode or cfg.prompt_mode,
            next=next_model,
            measure=measure,
            threshold=threshold,
        )

    def entry_for(self, task: str) -> str:
        entry = self.tasks[task].entry or self.entry
        if entry is not None:
            return entry
        targets = {m.escalation.next for m in self.models.values() if m.escalation and m.escalation.next}
        roots = [name for name in self.models if name not in targets]
        return roots[0]

    def route(self, task: str) -> list[TaskTier]:
        """The chain of tiers a prompt of `task` may climb, entry first."""
        tiers: list[TaskTier] = []
        model: str | None = self.entry_for(task)
        while model is not None:
            tier = self.tier(task, model)
            tiers.append(tier)
            model = tier.next
        return tiers


@dataclass(frozen=True)
class TaskTier:
    """A model's place on a task's route, from the herd file: how it is prompted, which measure and
    threshold make its answer escalate, and to whom. (Not a `StepKey`, which says where a prompt is.)"""

    model: str
    prompt_mode: PromptMode
    next: str | None
    measure: Measure
    threshold: float | None

    def escalates(self, value: float | None) -> bool:
        """True when the answer is too uncertain to keep and there is a larger model to ask."""
        if self.next is None or self.threshold is None or value is None:
            return False
        if self.measure in CONFIDENCE_MEASURES:
            return value < self.threshold
        return value > self.threshold


def _problems(exc: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    """pydantic's errors as (location, message), with a misspelt key told once: `treshold:` is both
    an unknown key and a missing `threshold`; that is one mistake, reported at the misspelt key with
    the name it should have."""
    errors = [(tuple(err["loc"]), err["type"], str(err["msg"])) for err in exc.errors()]
    missing = {loc: loc for loc, kind, _ in errors if kind == "missing"}
    merged: set[tuple[str | int, ...]] = set()
    out: list[tuple[tuple[str | int, ...], str]] = []
    for loc, kind, message in errors:
        if kind == "extra_forbidden" and loc and isinstance(loc[-1], str):
            siblings = [m[-1] for m in missing if m[:-1] == loc[:-1] and isinstance(m[-1], str)]
            close = difflib.get_close_matches(loc[-1], [str(n) for n in siblings], n=1, cutoff=0.6)
            if close:
                merged.add((*loc[:-1], close[0]))
                out.append((loc, f"unknown key; did you mean `{close[0]}`?"))
                continue
            out.append((loc, "unknown key"))
            continue
        out.append((loc, message))
    return [(loc, message) for loc, message in out if loc not in merged]


def load_herd(path: Path) -> HerdConfig:
    try:
        data, lines = load_with_lines(path)
    except YamlError as exc:
        raise ConfigError(str(exc)) from exc

    def fail(at: tuple[str | int, ...], message: str) -> ConfigError:
        line = line_of(lines, at)
        where = f"{path}:{line}" if line else str(path)
        key = ".".join(str(p) for p in at) or "(top level)"
        return ConfigError(f"{where}: {key}: {message}")

    if not isinstance(data, dict):
        raise fail((), "the herd file must be a mapping with `models` and `tasks`")
    try:
        herd = HerdConfig.model_validate(data)
    except ValidationError as exc:
        # One line per problem, in file order, so a user fixes them all in one pass.
        problems = sorted(
            (line_of(lines, loc) or 0, str(fail(loc, message))) for loc, message in _problems(exc)
        )
        raise ConfigError("\n".join(message for _, message in problems)) from None
    _check_graph(herd, fail)
    return herd


def _check_graph(herd: HerdConfig, fail: Any) -> None:
    names = set(herd.models)
    for name, model in herd.models.items():
        if model.escalation and model.escalation.next is not None and model.escalation.next not in names:
            raise fail(("models", name, "escalation", "next"), f"unknown model {model.escalation.next!r}")
    if herd.entry is not None and herd.entry not in names:
        raise fail(("entry",), f"unknown model {herd.entry!r}")
    if herd.audit is not None and herd.audit.reference is not None and herd.audit.reference not in names:
        raise fail(("audit", "reference"), f"unknown model {herd.audit.reference!r}")
    targets = {m.escalation.next for m in herd.models.values() if m.escalation and m.escalation.next}
    roots = [n for n in herd.models if n not in targets]
    for task_name, task in herd.tasks.items():
        at = ("tasks", task_name)
        if task.entry is not None and task.entry not in names:
            raise fail(at + ("entry",), f"unknown model {task.entry!r}")
        if task.entry is None and herd.entry is None and len(roots) != 1:
            raise fail(at, f"cannot tell the entry model (candidates: {sorted(roots)}); set `entry`")
        for model_name, override in task.models.items():
            if model_name not in names:
                raise fail(at + ("models", model_name), f"unknown model {model_name!r}")
            if override.next is not None and override.next not in names:
                raise fail(at + ("models", model_name, "next"), f"unknown model {override.next!r}")
        _check_task(herd, task_name, task, fail)
    _check_routes(herd, fail)


def _check_routes(herd: HerdConfig, fail: Any) -> None:
    """Each route names a chat task or a model, and no name means two things."""
    chat_tasks = {name for name, task in herd.tasks.items() if task.kind == "chat"}
    for name, target in herd.routes.items():
        at = ("routes", name)
        if name in herd.models or name in herd.tasks:
            what = "model" if name in herd.models else "task"
            raise fail(at, f"{name!r} already names a {what}; a route needs a name of its own")
        if target in herd.tasks and target not in chat_tasks:
            raise fail(at, f"task {target!r} is a {herd.tasks[target].kind} task; a route needs a chat task")
        if target not in chat_tasks and target not in herd.models:
            known = sorted(chat_tasks | set(herd.models))
            raise fail(at, f"unknown chat task or model {target!r} (known: {', '.join(known)})")
        if not chat_tasks:
            raise fail(at, "the herd file has no task of kind chat for requests to run under")


def _check_task(herd: HerdConfig, task_name: str, task: TaskConfig, fail: Any) -> None:
    at = ("tasks", task_name)
    if task.kind == "classify" and len(task.labels) < 2:
        raise fail(at + ("labels",), "a classify task needs at least two labels")
    if task.kind == "extract" and not task.fields:
        raise fail(at + ("fields",), "an extract task needs the `fields` to extract")
    if task.kind == "chat":
        for key in ("chat", "completion", "system", "instruction", "long_documents"):
            if getattr(task, key) is not None:
                raise fail(
                    at + (key,), "a chat task sends each request's messages as they are: it takes no " + key
                )
    for key in ("chat", "completion", "system", "instruction"):
        template = getattr(task, key)
        if template is not None:
            try:
                list(string.Formatter().parse(template))
            except ValueError as exc:
                raise fail(at + (key,), f"bad template: {exc}") from None
    seen: list[str] = []
    model: str | None = task.entry or herd.entry_for(task_name)
    while model is not None:
        if model in seen:
            raise fail(at, f"escalation cycle: {' -> '.join(seen + [model])}")
        seen.append(model)
        step = herd.tier(task_name, model)
        if step.next is not None and step.threshold is None:
            raise fail(("models", model, "escalation"), "escalation needs a `threshold`")
        if step.prompt_mode == "chat" and herd.models[model].protocol == "tgi":
            raise fail(
                ("models", model, "prompt_mode"),
                "TGI's /generate takes plain text: use prompt_mode `completion` here, "
                "or protocol `openai` (TGI's Messages API) for chat",
            )
        if step.prompt_mode == "completion" and task.completion is None and task.kind != "chat":
            raise fail(at, f"model {model!r} runs this task in completion mode: give a `completion` template")
        if step.prompt_mode == "chat" and task.kind == "template" and task.chat is None:
            raise fail(at, f"model {model!r} runs this task in chat mode: give a `chat` template")
        model = step.next

"""Inference backends: one small class per wire protocol, chosen by the herd file's `protocol`."""

from __future__ import annotations

from herd.backends.base import Backend, Generation, GenerationRequest
from herd.backends.openai_compat import OpenAIBackend
from herd.backends.stops import without_stop
from herd.backends.tgi import TgiBackend
from herd.herdfile.model import HerdConfig, ModelConfig

REGISTRY: dict[str, type[TgiBackend] | type[OpenAIBackend]] = {
    "tgi": TgiBackend,
    "openai": OpenAIBackend,
}


class WithoutStop:
    """A backend whose answers never end on a stop sequence, whichever protocol it speaks."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def generate(self, request: GenerationRequest) -> Generation:
        return without_stop(self.backend.generate(request), request.stop)


def make_backend(name: str, config: ModelConfig) -> Backend:
    return WithoutStop(REGISTRY[config.protocol](name, config))


def make_backends(herd: HerdConfig) -> dict[str, Backend]:
    return {name: make_backend(name, cfg) for name, cfg in herd.models.items()}

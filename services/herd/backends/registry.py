"""Inference backends: one small class per wire protocol, chosen by the herd file's `protocol`."""

from __future__ import annotations

from herd.backends.base import Backend
from herd.backends.openai_compat import OpenAIBackend
from herd.backends.tgi import TgiBackend
from herd.herdfile.model import HerdConfig, ModelConfig

REGISTRY: dict[str, type[TgiBackend] | type[OpenAIBackend]] = {
    "tgi": TgiBackend,
    "openai": OpenAIBackend,
}


def make_backend(name: str, config: ModelConfig) -> Backend:
    return REGISTRY[config.protocol](name, config)


def make_backends(herd: HerdConfig) -> dict[str, Backend]:
    return {name: make_backend(name, cfg) for name, cfg in herd.models.items()}

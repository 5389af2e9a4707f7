"""Generation backends behind one interface: HF transformers, offline vLLM, OpenAI-compatible servers.

    backend = make_backend("hf", model="smollm2-135m")
    results = backend.generate([GenerationRequest.from_question("Hi")], SamplingParams(n=2))

The torch-based parts (HFBackend, generate) load on first use, so the OpenAI-compatible backend and
the request types do not import torch. See docs/GENERATION.md.
"""

from __future__ import annotations

from typing import Any

from pvdata.generation.backends import BACKEND_SPECS, backend_kind, make_backend, resolve_backend
from pvdata.generation.base import (
    FINISH_REASONS,
    GenerationBackend,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    sample_seed,
)

__all__ = [
    "BACKEND_SPECS",
    "FINISH_REASONS",
    "Generation",
    "GenerationBackend",
    "GenerationError",
    "GenerationRequest",
    "GenerationResult",
    "HFBackend",
    "OpenAIBackend",
    "SamplingParams",
    "VLLMBackend",
    "backend_kind",
    "generate",
    "make_backend",
    "resolve_backend",
    "sample_seed",
]

_LAZY = {
    "Generation": "pvdata.generation.hf",
    "HFBackend": "pvdata.generation.hf",
    "generate": "pvdata.generation.hf",
    "OpenAIBackend": "pvdata.generation.openai_compat",
    "VLLMBackend": "pvdata.generation.vllm_offline",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pvdata.generation' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

"""`make_backend(spec)`: one place that turns "auto", "hf", "vllm" or "openai:MODEL" into a backend."""

from __future__ import annotations

import importlib.util
from typing import Any

from pvdata.errors import ConfigError
from pvdata.generation.base import GenerationBackend

BACKEND_SPECS = ("auto", "hf", "vllm", "openai:MODEL")


def backend_kind(spec: str) -> str:
    """'auto', 'hf', 'vllm' or 'openai' for a valid spec; ConfigError otherwise (no heavy imports)."""
    if spec in ("auto", "hf", "vllm"):
        return spec
    if spec.startswith("openai:") and spec.removeprefix("openai:").strip():
        return "openai"
    raise ConfigError(
        f"unknown generation backend {spec!r}: valid backends are auto (vllm when it is installed and "
        "the model runs on a GPU, else hf), hf (transformers, steerable), vllm (offline vLLM, steerable) "
        "and openai:MODEL (any OpenAI-compatible chat server, e.g. "
        "openai:gpt-4o-mini)"
    )


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(spec: str, device: str, *, steered: bool = False) -> str:
    """The concrete spec `auto` stands for; other valid specs come back unchanged.

    auto = vllm when vLLM is installed, the model runs on a CUDA device and nothing is steered (paged
    batching is the fastest way to get unsteered answers on a GPU), else hf, whose decode loop drops
    finished rows. Steered generation stays on hf, where steering positions are exact (vLLM's chunked
    prefill steers "response" at each chunk's end). Callers resolve before building a run config, so a
    run records the backend that made its answers, never "auto".
    """
    if backend_kind(spec) != "auto":
        return spec
    return "vllm" if device.startswith("cuda") and not steered and vllm_installed() else "hf"


def make_backend(
    spec: str,
    *,
    model: str | None = None,
    lm: Any = None,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    layers_path: str | None = None,
    steering: Any = None,
    vector: Any = None,
    token_budget: int | None = None,
    concurrency: int = 16,
    server_n: bool = True,
    base_url: str | None = None,
    **options: Any,
) -> GenerationBackend:
    """Build the backend a spec names.

    auto: see resolve_backend. hf: `model` (alias, folder, adapter folder or hub id) loaded with
    load_model, or an already loaded `lm`. vllm: `model` resolved the same way and run by vllm.LLM
    (`options` go to it). openai:MODEL: the model name on the server at `base_url` / $OPENAI_BASE_URL;
    no steering, no adapter.
    """
    if backend_kind(spec) == "auto":
        if lm is not None:
            where = str(next(lm.model.parameters()).device)
        else:
            from pvdata.models.loading import resolve_device

            where = resolve_device(device)
        spec = resolve_backend(spec, where, steered=steering is not None)
    kind = backend_kind(spec)
    if kind == "openai":
        from pvdata.generation.openai_compat import STEERING_ERROR, OpenAIBackend

        if steering is not None:
            raise ConfigError(STEERING_ERROR)
        if adapter:
            raise ConfigError(
                "--adapter cannot be used with an OpenAI-compatible server: load the LoRA adapter in the "
                "server (e.g. vllm serve --lora-modules name=PATH) and pass --backend openai:name"
            )
        return OpenAIBackend(
            spec.removeprefix("openai:").strip(),
            base_url=base_url,
            concurrency=concurrency,
            server_n=server_n,
            **options,
        )
    if kind == "hf":
        from pvdata.generation.hf import HFBackend

        if lm is None:
            if not model:
                raise ConfigError("the hf backend needs --model (an alias, a local folder or a hub id)")
            from pvdata.models import load_model

            lm = load_model(model, dtype=dtype, device=device, adapter=adapter, layers_path=layers_path)
        return HFBackend(lm, steering=steering, vector=vector, token_budget=token_budget)
    from pvdata.generation.vllm_offline import VLLMBackend

    if not model:
        raise ConfigError("the vllm backend needs --model (an alias, a local folder or a hub id)")
    return VLLMBackend(model, adapter=adapter, dtype=dtype, steering=steering, vector=vector, **options)

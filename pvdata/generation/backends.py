"""`make_backend(spec)`: one place that turns "hf", "vllm" or "openai:MODEL" into a backend."""

from __future__ import annotations

from typing import Any

from pvdata.errors import ConfigError
from pvdata.generation.base import GenerationBackend

BACKEND_SPECS = ("hf", "vllm", "openai:MODEL")


def backend_kind(spec: str) -> str:
    """'hf', 'vllm' or 'openai' for a valid spec; ConfigError otherwise (no heavy imports)."""
    if spec in ("hf", "vllm"):
        return spec
    if spec.startswith("openai:") and spec.removeprefix("openai:").strip():
        return "openai"
    raise ConfigError(
        f"unknown generation backend {spec!r}: valid backends are hf (transformers, steerable), vllm "
        "(offline vLLM, steerable) and openai:MODEL (any OpenAI-compatible chat server, e.g. "
        "openai:gpt-4o-mini)"
    )


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

    hf: `model` (alias, folder, adapter folder or hub id) loaded with load_model, or an already loaded
    `lm`. vllm: `model` resolved the same way and run by vllm.LLM (`options` go to it). openai:MODEL: the
    model name on the server at `base_url` / $OPENAI_BASE_URL; no steering, no adapter.
    """
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

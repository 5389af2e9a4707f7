"""Configs of real model shapes, for benchmarks on machines where no weights exist (random init)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "family": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
    "qwen2.5-7b": {
        "family": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
    },
    "llama-3.1-8b": {
        "family": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    },
    "tiny": {  # for CPU smoke tests of the benchmarks themselves
        "family": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
    },
}


def build_shape(name: str, *, device: str, dtype: Any, seed: int = 0) -> Any:
    """A random-initialised CausalLM of the named real shape, created directly on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from pvdata.errors import ConfigError

    if name not in SHAPES:
        raise ConfigError(f"unknown model shape {name!r}: valid shapes are {', '.join(SHAPES)}")
    spec = dict(SHAPES[name])
    family = spec.pop("family")
    config = (Qwen2Config if family == "qwen2" else LlamaConfig)(**spec)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


class PadOnlyTokenizer:
    """Random-shape models have no tokenizer; capture and the training loop only need a pad id."""

    pad_token_id = 0


def wrap_pad_only(model: Any, name: str) -> Any:
    from pvdata.models.layers import find_layers
    from pvdata.models.loading import LoadedModel

    return LoadedModel(model=model, tokenizer=PadOnlyTokenizer(), model_id=name, layers=find_layers(model))


def load_bench_model(
    args: argparse.Namespace, *, seed: int = 0, wrap: Callable[[Any, str], Any] = wrap_pad_only
) -> Any:
    """The model a benchmark names: `--model-shape` builds random weights of that shape on `--device`
    (wrapped by `wrap`), `--model` loads an alias, folder or hub id."""
    from pvdata.errors import ConfigError
    from pvdata.models.loading import load_model, resolve_device, resolve_dtype

    if args.model_shape:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        model = build_shape(args.model_shape, device=device, dtype=dtype, seed=seed)
        return wrap(model, args.model_shape)
    if not args.model:
        raise ConfigError(
            "give --model (alias, folder, hub id) or --model-shape (random weights of a real shape)"
        )
    return load_model(args.model, dtype=args.dtype, device=args.device)


def block_params(model: Any, n_blocks: int) -> int:
    """Parameters in the first n_blocks decoder blocks (the matmul work per token up to that layer)."""
    from pvdata.models.layers import find_layers

    blocks = find_layers(model).blocks
    return sum(p.numel() for block in list(blocks)[:n_blocks] for p in block.parameters())


def peak_flops(device: Any, dtype: Any) -> float | None:
    """Dense peak FLOP/s of known GPUs (bf16/fp16 tensor cores; tf32 for fp32), for MFU."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    half = dtype in (torch.bfloat16, torch.float16)
    table = {"H100": (989e12, 494e12), "H200": (989e12, 494e12), "A100": (312e12, 156e12)}
    for key, (p_half, p_tf32) in table.items():
        if key in name:
            return p_half if half else p_tf32
    return None

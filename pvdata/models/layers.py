"""Find a model's decoder blocks, the one place the layer convention is anchored.

Layer l (1..L) is the output of block l, i.e. a forward hook on ``blocks[l-1]``; layer 0 is the
embedding output (the input of ``blocks[0]``), which can be captured but not steered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvdata.errors import ModelError

# Attribute paths of the decoder-block list, relative to the *CausalLM model, tried in order.
KNOWN_LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2/2.5/3, Gemma 1-3 (text), Phi, Phi-3, SmolLM, OLMo
    "model.language_model.layers",  # multimodal wrappers (Gemma 3, Llava-style)
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "layers",  # a bare decoder stack
)


@dataclass(frozen=True)
class LayerInfo:
    """The blocks, the module that runs them (receives attention_mask), and where they were found."""

    blocks: Any  # torch.nn.ModuleList
    backbone: Any  # torch.nn.Module whose forward runs the blocks
    path: str
    model_class: str

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def check_layer(self, layer: int, *, allow_embedding: bool = True) -> int:
        """Validate a layer number against this model; the error names the valid range."""
        low = 0 if allow_embedding else 1
        if not isinstance(layer, int) or isinstance(layer, bool) or not low <= layer <= self.n_layers:
            extra = " (0 = embedding output)" if allow_embedding else " (layer 0 cannot be steered)"
            raise ModelError(
                f"layer {layer!r} is out of range for {self.model_class} with {self.n_layers} blocks: "
                f"valid layers are {low}..{self.n_layers}{extra}"
            )
        return layer


def unwrap_peft(model: Any) -> Any:
    """The underlying transformers model of a PEFT-wrapped one (LoRA layers stay in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _resolve(root: Any, path: str) -> Any | None:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_layers(model: Any, layers_path: str | None = None) -> LayerInfo:
    """Locate the decoder blocks of `model` (PEFT wrappers unwrapped); `layers_path` overrides."""
    import torch

    inner = unwrap_peft(model)
    cls = type(inner).__name__
    paths = (layers_path,) if layers_path else KNOWN_LAYER_PATHS
    for path in paths:
        blocks = _resolve(inner, path)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks) > 0:
            parent_path = path.rpartition(".")[0]
            backbone = _resolve(inner, parent_path) if parent_path else inner
            return LayerInfo(blocks=blocks, backbone=backbone, path=path, model_class=cls)
    if layers_path:
        raise ModelError(
            f"layers_path {layers_path!r} does not name a non-empty torch.nn.ModuleList on {cls}; "
            "give the dotted attribute path of the decoder blocks, e.g. 'model.layers'"
        )
    raise ModelError(
        f"cannot find the decoder blocks of {cls}: tried {', '.join(KNOWN_LAYER_PATHS)}. "
        "Pass the dotted path of its nn.ModuleList of blocks with --layers-path "
        "(Python: layers_path='...'), e.g. --layers-path model.layers"
    )


def hidden_size(model: Any) -> int:
    """Width of the residual stream, from the (text) config."""
    config = unwrap_peft(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    raise ModelError(f"cannot read the hidden size of {type(config).__name__}: no hidden_size or n_embd")

"""lm-evaluation-harness ``steered`` model files: capability evals of a steered model for free.

Format, read from EleutherAI/lm-evaluation-harness ``lm_eval/models/hf_steered.py``: ``steer_path``
ending in .pt/.pth is loaded with ``torch.load(f, weights_only=True)`` and must be a dict::

    {hookpoint: {"steering_vector": Tensor[H], "steering_coefficient": float,
                 "action": "add" | "clamp", "bias": Tensor | None, "head_index": int | None}}

"add" adds ``steering_coefficient * steering_vector`` at every position; "clamp" sets the component
along the unit direction to ``steering_coefficient``. Older versions index ``steer_info["bias"]``
directly, so the key is always written (None); newer ones assert bias is None for "add".

Hookpoints: each is matched against ``model.base_model.named_modules()`` and gets a forward hook on
that module's output. For a ``*ForCausalLM`` the base model is the inner decoder (``model.model``), so
``"layers.N"`` is decoder block N, 0-based, and the hook edits the block's output: pvdata layer l
(output of 1-based block l) is ``"layers.{l-1}"``. Other families name the block list differently
(GPT-2: ``"h.N"``); pass ``hookpoint_template`` for them. Layer 0 (embedding output) has no block.

Caveat: some older lm-eval versions built the "add" hooks with a lambda over the loop variables, so
every hookpoint received the last entry's vector; check your version before exporting several layers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from pvdata.errors import VectorError
from pvdata.vectors.formats._files import atomic_path, existing_file
from pvdata.vectors.persona_vector import PersonaVector, format_layers

DEFAULT_HOOKPOINT_TEMPLATE = "layers.{block}"
ACTIONS = ("add", "clamp")


def hookpoint_for(layer: int, template: str = DEFAULT_HOOKPOINT_TEMPLATE) -> str:
    """The hookpoint name for pvdata layer ``layer``: ``{block}`` = layer-1 (0-based), ``{layer}`` = layer."""
    return template.format(block=layer - 1, layer=layer)


def export_lm_eval(
    vector: PersonaVector,
    path: str | os.PathLike[str],
    *,
    layers: Iterable[int] | None = None,
    coef: float = 1.0,
    hookpoint_template: str = DEFAULT_HOOKPOINT_TEMPLATE,
    action: str = "add",
) -> Path:
    """Write a steer_path .pt for ``lm_eval --model steered``; raw rows, ``coef`` as steering_coefficient.

    ``layers`` defaults to the vector's computed layers (except 0). Steering many layers with raw rows
    over-steers; pass one layer, or an ``incremental()`` vector for all of them.
    """
    if action not in ACTIONS:
        raise VectorError(f"unknown lm-eval action {action!r}: valid actions are {', '.join(ACTIONS)}")
    if "{block}" not in hookpoint_template and "{layer}" not in hookpoint_template:
        raise VectorError(
            f"hookpoint_template {hookpoint_template!r} has no {{block}} or {{layer}} placeholder "
            f"(default {DEFAULT_HOOKPOINT_TEMPLATE!r})"
        )
    chosen = (
        [layer for layer in vector.layers if layer >= 1]
        if layers is None
        else sorted({vector.check_layer(layer) for layer in layers})
    )
    if 0 in chosen:
        raise VectorError(
            "layer 0 (embedding output) cannot be exported for lm-eval: its hookpoints are block outputs; "
            f"choose layers 1..{vector.n_layers}"
        )
    if not chosen:
        raise VectorError(
            f"no layers to export for vector {vector.vector_id} (computed: {format_layers(vector.layers)})"
        )
    missing = [layer for layer in chosen if layer not in vector.layers]
    if missing:
        raise VectorError(
            f"layers {format_layers(missing)} were not computed for vector {vector.vector_id} "
            f"(computed: {format_layers(vector.layers)}); their rows are zero"
        )
    if action == "clamp":
        zero = [layer for layer in chosen if float(vector.norms()[layer]) == 0.0]
        if zero:
            raise VectorError(f"'clamp' needs a direction, but layers {format_layers(zero)} are zero rows")

    config: dict[str, dict[str, Any]] = {}
    for layer in chosen:
        config[hookpoint_for(layer, hookpoint_template)] = {
            "steering_vector": vector.values[layer].clone(),
            "steering_coefficient": float(coef),
            "action": action,
            "bias": None,
            "head_index": None,
        }
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(config, tmp)
    return target


def import_lm_eval(
    path: str | os.PathLike[str],
    *,
    n_layers: int,
    trait: str = "unknown",
    model_id: str = "unknown",
    pooling: str = "unknown",
    method: str = "unknown",
    hookpoint_template: str = DEFAULT_HOOKPOINT_TEMPLATE,
    provenance: Mapping[str, Any] | None = None,
) -> PersonaVector:
    """Read an "add" steering file back into rows: row l = steering_coefficient * steering_vector.

    The file carries no model shape, so ``n_layers`` is required.
    """
    p = existing_file(path)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VectorError(f"{p}: not a torch file that can be loaded safely: {exc}") from exc
    if not isinstance(data, dict):
        raise VectorError(
            f"{p}: an lm-eval steering file is a dict of hookpoints, found {type(data).__name__}"
        )
    pattern = re.compile(
        "^"
        + re.escape(hookpoint_template)
        .replace(re.escape("{block}"), r"(?P<block>\d+)")
        .replace(re.escape("{layer}"), r"(?P<layer>\d+)")
        + "$"
    )
    rows: dict[int, torch.Tensor] = {}
    coefs: dict[str, float] = {}
    for hookpoint, info in data.items():
        match = pattern.match(str(hookpoint))
        if match is None:
            raise VectorError(
                f"{p}: hookpoint {hookpoint!r} does not match the template {hookpoint_template!r}"
            )
        if not isinstance(info, dict) or info.get("action") != "add" or "steering_vector" not in info:
            raise VectorError(f"{p}: hookpoint {hookpoint!r} is not an 'add' steering entry")
        groups = match.groupdict()
        layer = int(groups["layer"]) if groups.get("layer") else int(groups["block"]) + 1
        coef = float(info.get("steering_coefficient", 1.0))
        rows[layer] = info["steering_vector"].detach().to(torch.float32) * coef
        coefs[str(hookpoint)] = coef
    if not rows:
        raise VectorError(f"{p}: no hookpoints in the file")
    widths = {int(r.shape[-1]) for r in rows.values()}
    if len(widths) != 1 or any(r.ndim != 1 for r in rows.values()):
        raise VectorError(
            f"{p}: steering vectors must all be 1-D of one width, found widths {sorted(widths)}"
        )
    if max(rows) > n_layers:
        raise VectorError(f"{p}: has layer {max(rows)} but the model has {n_layers} layers")
    values = torch.zeros(n_layers + 1, widths.pop(), dtype=torch.float32)
    for layer, row in rows.items():
        values[layer] = row
    prov: dict[str, Any] = {"imported_from": "lm_eval", "source_file": p.name, "coefficients": coefs}
    prov.update(provenance or {})
    return PersonaVector(
        trait=trait,
        model_id=model_id,
        values=values,
        pooling=pooling,
        method=method,
        layers=tuple(sorted(rows)),
        provenance=prov,
    )

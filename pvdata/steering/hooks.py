"""Activation steering with forward hooks (ALGORITHMS.md section 6).

Layer l is the output of block l, so steering layer l is a forward hook on ``blocks[l-1]``; the next
block reads the changed residual stream. Note that in transformers 5 ``output_hidden_states`` at a
steered layer still shows the unsteered value: capture steered activations with hooks.

Positions follow the research code, with one fix: pad positions are never touched.

- "all": every real (non-pad) position of every forward call.
- "prompt": only forward calls with more than one position (prefill), real positions only; decode steps
  of ``generate`` (one new position each) are not steered.
- "response": only the last position of each forward call (the last prompt token at prefill, then each
  generated token), skipped where that position is a pad (right padding).

Pad positions come from the 2-D ``attention_mask`` the CausalLM passes to the backbone (captured by a
forward pre-hook); the current call's positions are its last ``seq_len`` columns (with a KV cache the
mask covers past + current). No mask, or a mask that is not 2-D, means every position is real. The mask
is kept until the next backbone call (not cleared after it) so gradient-checkpointing recomputation in
backward steers exactly what the forward pass steered.

Hooks never modify tensors in place and never disable autograd, so LoRA training can steer
(preventative steering); the vector itself is a constant (detached).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from pvdata.errors import ConfigError, ModelError, VectorError
from pvdata.models.layers import LayerInfo, find_layers, hidden_size
from pvdata.steering.spec import SteeringSpec, normalize_layers, steering_row

__all__ = [
    "SteeringHandle",
    "ablate",
    "ablate_direction",
    "apply_spec",
    "apply_steering",
    "steer",
]


def ablate_direction(h: torch.Tensor, v_hat: torch.Tensor) -> torch.Tensor:
    """h - (h . v_hat) v_hat over the last dim, computed in at least float32 and returned in h's dtype.

    `v_hat` must already be unit length; low-precision h is promoted so the result is as orthogonal as
    its own dtype allows.
    """
    work = torch.promote_types(h.dtype, torch.float32)
    hw = h.to(work)
    u = v_hat.to(device=h.device, dtype=work)
    out = hw - (hw @ u).unsqueeze(-1) * u
    return out.to(h.dtype)


def _unit(row: torch.Tensor, layer: int) -> torch.Tensor:
    norm = torch.linalg.vector_norm(row)
    if not torch.isfinite(norm) or float(norm) == 0.0:
        raise VectorError(f"vector row {layer} has zero or non-finite norm: no direction to ablate")
    return row / norm


def _vector_rows(vector: Any) -> tuple[torch.Tensor, str | None]:
    """The [L+1, H] float32 rows (detached) and the vector id, from a PersonaVector-like or a tensor."""
    vector_id = getattr(vector, "vector_id", None)
    # A Tensor has a .values() method (sparse tensors), so test for a tensor first.
    values = vector if isinstance(vector, torch.Tensor) else getattr(vector, "values", vector)
    if not isinstance(values, torch.Tensor):
        try:
            values = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise VectorError(
                f"cannot use a {type(vector).__name__} as a steering vector: pass a PersonaVector "
                "(anything with .values) or a tensor of shape [L+1, H]"
            ) from exc
    if values.ndim != 2:
        raise VectorError(
            f"steering vector has shape {tuple(values.shape)}: expected [L+1, H] (one row per layer, "
            "row 0 = embedding output)"
        )
    if not values.is_floating_point():
        values = values.float()
    return values.detach().to(torch.float32), vector_id if isinstance(vector_id, str) else None


def _resolve_model(model: Any, layers_path: str | None) -> tuple[Any, LayerInfo, int | None]:
    """(module to describe, its LayerInfo, hidden size or None when unknown) for any supported model."""
    inner = getattr(model, "model", None)
    loaded_layers = getattr(model, "layers", None)
    if isinstance(loaded_layers, LayerInfo) and inner is not None:  # a LoadedModel
        info = loaded_layers if layers_path is None else find_layers(inner, layers_path)
        target = inner
    else:
        info = find_layers(model, layers_path)
        target = model
    try:
        width: int | None = hidden_size(target)
    except (ModelError, AttributeError):
        width = None  # a bare stack without a config: the width is checked against activations
    return target, info, width


def _mask_arg_index(backbone: Any) -> int | None:
    """Position of attention_mask among forward's positional args (hooks see args without self)."""
    try:
        params = list(inspect.signature(backbone.forward).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("attention_mask") if "attention_mask" in params else None


@dataclass
class _CallState:
    """The current backbone call's 2-D attention mask and the position selections derived from it."""

    mask_index: int | None
    mask: torch.Tensor | None = None
    selections: dict[tuple[Any, ...], torch.Tensor | bool] = field(default_factory=dict)

    def pre_hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and self.mask_index is not None and len(args) > self.mask_index:
            mask = args[self.mask_index]
        self.mask = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None
        self.selections = {}

    def select(self, positions: str, batch: int, seq: int, device: torch.device) -> torch.Tensor | bool:
        """Which of this call's positions to steer: True (all), False (none) or a bool [B, T', 1] mask.

        For "response" T' is 1 (the last position only). Computed once per call and shared by layers,
        so the host sync this needs happens once per forward, not once per layer.
        """
        key = (positions, batch, seq, device)
        cached = self.selections.get(key)
        if cached is not None:
            return cached
        mask = self.mask
        real: torch.Tensor | None = None
        if mask is not None and mask.shape[0] == batch and mask.shape[1] >= seq:
            real = mask[:, -seq:].to(device) != 0
        if positions == "prompt" and seq <= 1:
            result: torch.Tensor | bool = False
        else:
            if positions == "response" and real is not None:
                real = real[:, -1:]
            if real is None or bool(real.all()):
                result = True
            elif not bool(real.any()):
                result = False
            else:
                result = real.unsqueeze(-1)
        self.selections[key] = result
        return result


class _LayerHook:
    """The forward hook of one steered block: add coef * v or ablate v_hat at the selected positions."""

    def __init__(self, spec: SteeringSpec, layer: int, row: torch.Tensor, state: _CallState) -> None:
        self.mode = spec.mode
        self.positions = spec.positions
        self.layer = layer
        self.state = state
        # add: the exact delta coef * v[l] (float32), rounded once to the activation dtype;
        # ablate: the unit direction, applied in at least float32.
        self.base = spec.coef_for(layer) * row if self.mode == "add" else _unit(row, layer)
        self.width = row.shape[0]
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _vec(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if self.mode == "ablate":
            dtype = torch.promote_types(dtype, torch.float32)
        key = (device, dtype)
        vec = self._cache.get(key)
        if vec is None:
            vec = self._cache[key] = self.base.to(device=device, dtype=dtype)
        return vec

    def _apply(self, h: torch.Tensor) -> torch.Tensor:
        vec = self._vec(h.device, h.dtype)
        if self.mode == "add":
            return h + vec
        return ablate_direction(h, vec)

    def _steer(self, h: torch.Tensor) -> torch.Tensor | None:
        if h.shape[-1] != self.width:
            raise VectorError(
                f"steering vector width {self.width} does not match the hidden size {h.shape[-1]} "
                f"of the activations at layer {self.layer}"
            )
        squeeze = h.ndim == 2  # a [T, H] stack without a batch dim
        hb = h.unsqueeze(0) if squeeze else h
        if hb.ndim != 3:
            raise ModelError(
                f"block {self.layer - 1} returned hidden states of shape {tuple(h.shape)}; steering "
                "expects [batch, seq, hidden]"
            )
        sel = self.state.select(self.positions, hb.shape[0], hb.shape[1], hb.device)
        if sel is False:
            return None
        if self.positions == "response":
            last = hb[:, -1:]
            new_last = self._apply(last)
            if sel is not True:
                new_last = torch.where(sel, new_last, last)
            out = torch.cat([hb[:, :-1], new_last], dim=1)
        else:
            out = self._apply(hb)
            if sel is not True:
                out = torch.where(sel, out, hb)
        return out.squeeze(0) if squeeze else out

    def __call__(self, module: Any, args: tuple[Any, ...], output: Any) -> Any:
        if isinstance(output, torch.Tensor):  # transformers 5.x
            return self._steer(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):  # 4.x / vLLM
            new = self._steer(output[0])
            return None if new is None else (new, *output[1:])
        raise ModelError(
            f"block {self.layer - 1} returned {type(output).__name__}; steering expects a Tensor or a "
            "tuple whose first item is the hidden states"
        )


class SteeringHandle:
    """Registered steering hooks; `.remove()` takes them off (idempotent). Also a context manager."""

    def __init__(self, spec: SteeringSpec, handles: list[Any]) -> None:
        self.spec = spec
        self._handles = handles

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_spec(
    model: Any, vector: Any, spec: SteeringSpec, *, layers_path: str | None = None
) -> SteeringHandle:
    """Register the hooks of `spec` on `model` (LoadedModel, transformers or PEFT model).

    Everything is validated before any hook is registered, so a bad call leaves the model untouched.
    The returned handle's spec carries the vector's id when the spec had none.
    """
    _, info, width = _resolve_model(model, layers_path)
    rows, vector_id = _vector_rows(vector)
    if spec.vector_id is None and vector_id is not None:
        spec = replace(spec, vector_id=vector_id)
    elif spec.vector_id is not None and vector_id is not None and spec.vector_id != vector_id:
        raise VectorError(
            f"steering spec names vector {spec.vector_id!r} but the vector given is {vector_id!r}"
        )
    for layer in spec.layers:
        info.check_layer(layer, allow_embedding=False)
    expected_rows = info.n_layers + 1
    if rows.shape[0] != expected_rows:
        raise VectorError(
            f"steering vector has {rows.shape[0]} rows but {info.model_class} has {info.n_layers} blocks, "
            f"so a vector needs L+1 = {expected_rows} rows (row 0 = embedding output): was it extracted "
            "from another model?"
        )
    if width is not None and rows.shape[1] != width:
        raise VectorError(
            f"steering vector width {rows.shape[1]} does not match the hidden size {width} of "
            f"{info.model_class}: was it extracted from another model?"
        )
    used: dict[int, torch.Tensor] = {}
    for layer in spec.layers:
        row = steering_row(rows, layer, spec, getattr(vector, "layers", ()))
        if not bool(torch.isfinite(row).all()):
            raise VectorError(f"steering vector row {layer} contains NaN or inf")
        used[layer] = row
    state = _CallState(mask_index=_mask_arg_index(info.backbone))
    hooks = {layer: _LayerHook(spec, layer, row, state) for layer, row in used.items()}
    handles: list[Any] = [info.backbone.register_forward_pre_hook(state.pre_hook, with_kwargs=True)]
    for layer, hook in hooks.items():
        handles.append(info.blocks[layer - 1].register_forward_hook(hook))
    return SteeringHandle(spec, handles)


def _resolve_layers(
    model: Any, layers: int | Sequence[int] | str, layers_path: str | None
) -> tuple[int, ...]:
    """Layer numbers checked against the model first, so a bad one gets the model's valid range."""
    _, info, _ = _resolve_model(model, layers_path)
    if layers == "all":
        return tuple(range(1, info.n_layers + 1))
    if isinstance(layers, str):
        raise ConfigError(f"steering layers {layers!r}: give layer numbers 1..{info.n_layers} or 'all'")
    items = (layers,) if isinstance(layers, int) else tuple(layers)
    for layer in items:
        info.check_layer(layer, allow_embedding=False)
    return normalize_layers(items)


def apply_steering(
    model: Any,
    vector: Any,
    *,
    layers: int | Sequence[int] | str,
    coef: float | Sequence[float] = 1.0,
    mode: str = "add",
    positions: str = "all",
    incremental: bool = False,
    layers_path: str | None = None,
) -> SteeringHandle:
    """Steer until `.remove()` is called on the returned handle (for training loops).

    `layers` is one layer, several, or "all" (1..L); `coef` is one number or one per layer.
    """
    spec = SteeringSpec(
        mode=mode,  # type: ignore[arg-type]  # validated by SteeringSpec
        layers=_resolve_layers(model, layers, layers_path),
        coef=coef if isinstance(coef, int | float) else tuple(coef),
        positions=positions,  # type: ignore[arg-type]
        incremental=incremental,
    )
    return apply_spec(model, vector, spec, layers_path=layers_path)


@contextmanager
def steer(
    model: Any,
    vector: Any,
    *,
    layers: int | Sequence[int] | str,
    coef: float | Sequence[float] = 1.0,
    mode: str = "add",
    positions: str = "all",
    incremental: bool = False,
    layers_path: str | None = None,
) -> Iterator[SteeringHandle]:
    """Steer inside a with-block; hooks come off on exit, also after an exception. Contexts nest."""
    handle = apply_steering(
        model,
        vector,
        layers=layers,
        coef=coef,
        mode=mode,
        positions=positions,
        incremental=incremental,
        layers_path=layers_path,
    )
    try:
        yield handle
    finally:
        handle.remove()


@contextmanager
def ablate(
    model: Any,
    vector: Any,
    *,
    layers: int | Sequence[int] | str,
    positions: str = "all",
    incremental: bool = False,
    layers_path: str | None = None,
) -> Iterator[SteeringHandle]:
    """Project the vector's direction out of the chosen layers (CAFT-style) inside a with-block."""
    with steer(
        model,
        vector,
        layers=layers,
        mode="ablate",
        positions=positions,
        incremental=incremental,
        layers_path=layers_path,
    ) as handle:
        yield handle

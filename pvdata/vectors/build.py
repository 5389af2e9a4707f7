"""From pooled activations to a persona vector: v[l] = mean(pos)[l] - mean(neg)[l], unnormalised.

The means are accumulated in float64: with hundreds of rollouts and large residual norms a float32 sum
loses digits in exactly the small difference that is the vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from pvdata.errors import VectorError
from pvdata.vectors.persona_vector import PersonaVector, format_layers, provide_builder


def _empty_side_error(n_pos: int, n_neg: int) -> VectorError:
    sides = [name for name, n in (("positive", n_pos), ("negative", n_neg)) if n == 0]
    return VectorError(
        f"no {' or '.join(sides)} samples left to build a vector from (kept {n_pos} positive and "
        f"{n_neg} negative after filtering): lower the trait-score threshold, or use --filter none "
        "to keep every rollout"
    )


def mean_difference(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """mean(pos) - mean(neg) over the sample axis (dim 0), float64 accumulation, float32 result.

    Shapes are [N_pos, R, H] and [N_neg, R, H] (R = L+1 rows or k selected layers); any trailing
    shape works as long as both sides agree.
    """
    for name, t in (("positive", pos), ("negative", neg)):
        if not isinstance(t, torch.Tensor):
            raise VectorError(f"{name} activations must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise VectorError(
                f"{name} activations have shape {list(t.shape)}: expected [N, L+1, H] or [N, k, H]"
            )
    if pos.shape[1:] != neg.shape[1:]:
        raise VectorError(
            f"positive activations have shape {list(pos.shape)} and negative {list(neg.shape)}: "
            "everything after the sample axis must match"
        )
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise _empty_side_error(int(pos.shape[0]), int(neg.shape[0]))
    diff = pos.detach().to(torch.float64).mean(dim=0) - neg.detach().to(torch.float64).mean(dim=0)
    if not bool(torch.isfinite(diff).all()):
        raise VectorError(
            "activations contain NaN or inf values: the mean difference is not finite "
            "(check the capture precision and for empty answers)"
        )
    return diff.to(torch.float32).cpu()


def build_vector(
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    n_layers: int,
    trait: str,
    model_id: str,
    pooling: str,
    layers: Iterable[int] | None = None,
    method: str = "mean_diff",
    trait_version: str = "",
    provenance: Mapping[str, Any] | None = None,
) -> PersonaVector:
    """A mean-difference PersonaVector with all L+1 rows, zero where a layer was not computed.

    ``pos``/``neg`` are [N, L+1, H] (every row captured; ``layers`` then picks which rows to keep,
    default all) or [N, k, H] holding the k layers of ``layers`` in the given order.
    """
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise VectorError(f"n_layers must be a positive integer (the number of blocks), got {n_layers!r}")
    wanted = list(range(n_layers + 1)) if layers is None else list(layers)
    for layer in wanted:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= n_layers:
            raise VectorError(
                f"layer {layer!r} is out of range for a model with {n_layers} layers: valid layers are "
                f"0..{n_layers} (0 = embedding output)"
            )
    if len(set(wanted)) != len(wanted):
        raise VectorError(f"layers lists a layer twice: {wanted}")
    if not wanted:
        raise VectorError("layers is empty: name at least one layer to build the vector at")

    diff = mean_difference(pos, neg)
    if diff.ndim != 2:
        raise VectorError(
            f"activations have shape {list(pos.shape)}: expected [N, L+1, H] or [N, k, H] (3-D)"
        )
    n_rows, width = diff.shape
    values = torch.zeros(n_layers + 1, width, dtype=torch.float32)
    if n_rows == len(wanted):
        # [N, k, H]: column i is layer wanted[i]. (When k = L+1 and layers is all rows in order, the
        # two readings agree.)
        values[wanted] = diff
    elif n_rows == n_layers + 1:
        values[wanted] = diff[wanted]
    else:
        raise VectorError(
            f"activations have {n_rows} rows per sample, but the model has {n_layers + 1} rows (L+1) and "
            f"{len(wanted)} layers were requested ({format_layers(wanted)}): pass [N, L+1, H] or one row "
            "per requested layer"
        )
    return PersonaVector(
        trait=trait,
        model_id=model_id,
        values=values,
        pooling=pooling,
        method=method,
        n_pos=int(pos.shape[0]),
        n_neg=int(neg.shape[0]),
        layers=tuple(sorted(wanted)),
        trait_version=trait_version,
        provenance=dict(provenance or {}),
    )


provide_builder(build_vector)

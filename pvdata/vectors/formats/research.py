"""The research code's vector file: a bare [L+1, H] float32 tensor written with torch.save.

The public persona-vectors code saves one such file per pooling, named
``{trait}_{pooling}_diff.pt`` (pooling = prompt_avg | response_avg | prompt_last), with the same row
convention as pvdata (row 0 = embedding output). It carries no metadata, so an import takes trait and
model from the caller, or reads them from that file-name pattern when the caller gives none.

One difference to keep in mind: the research code took its rows from HF ``output_hidden_states``, whose
last row is after the final norm; pvdata's hooks record the last block's pre-norm output.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from pvdata.errors import VectorError
from pvdata.vectors.formats._files import atomic_path, existing_file
from pvdata.vectors.persona_vector import POOLINGS, PersonaVector

_RESEARCH_NAME = re.compile(r"^(?P<trait>.+)_(?P<pooling>" + "|".join(POOLINGS) + r")_diff$")


def export_research_pt(vector: PersonaVector, path: str | os.PathLike[str]) -> Path:
    """Write the values as a bare tensor, loadable by the research code (metadata is dropped)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(vector.values.clone(), tmp)
    return target


def _expected_shape(n_layers: int | None, hidden_size: int | None) -> str:
    rows = "L+1" if n_layers is None else str(n_layers + 1)
    width = "H" if hidden_size is None else str(hidden_size)
    return f"[{rows}, {width}]"


def import_research_pt(
    path: str | os.PathLike[str],
    *,
    trait: str | None = None,
    model_id: str = "unknown",
    pooling: str | None = None,
    method: str = "mean_diff",
    n_layers: int | None = None,
    hidden_size: int | None = None,
    layers: Iterable[int] | None = None,
    trait_version: str = "",
    provenance: Mapping[str, Any] | None = None,
) -> PersonaVector:
    """Read a bare [L+1, H] tensor; give ``n_layers``/``hidden_size`` to check it fits a model.

    Without ``trait``/``pooling``, a research file name ``evil_response_avg_diff.pt`` supplies them;
    otherwise they become "unknown". float16/bfloat16/float64 tensors are converted to float32.
    """
    p = existing_file(path)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise VectorError(
            f"{p}: not a torch tensor file that can be loaded safely (weights_only=True): {exc}"
        ) from exc
    if isinstance(data, dict):
        looks_lm_eval = bool(data) and all(
            isinstance(v, dict) and "steering_vector" in v for v in data.values()
        )
        hint = (
            " (it looks like an lm-eval steering file: load it with format='lm-eval')"
            if looks_lm_eval
            else ""
        )
        raise VectorError(
            f"{p}: expected a bare tensor of shape {_expected_shape(n_layers, hidden_size)}, found a dict "
            f"with keys {sorted(map(str, data))[:8]}{hint}"
        )
    if not isinstance(data, torch.Tensor):
        raise VectorError(
            f"{p}: expected a tensor of shape {_expected_shape(n_layers, hidden_size)}, found "
            f"{type(data).__name__}"
        )
    shape = list(data.shape)
    shape_ok = (
        data.ndim == 2
        and (n_layers is None or shape[0] == n_layers + 1)
        and (hidden_size is None or shape[1] == hidden_size)
    )
    if not shape_ok:
        raise VectorError(
            f"{p}: found a tensor of shape {shape} but expected {_expected_shape(n_layers, hidden_size)} "
            "(one row per layer, row 0 = embedding output)"
        )
    if not data.is_floating_point():
        raise VectorError(f"{p}: tensor has dtype {data.dtype}; a vector file holds floating-point values")
    prov: dict[str, Any] = {"imported_from": "research_pt", "source_file": p.name}
    if data.dtype != torch.float32:
        prov["converted_from_dtype"] = str(data.dtype).removeprefix("torch.")
    prov.update(provenance or {})

    match = _RESEARCH_NAME.match(p.stem)
    if trait is None:
        trait = match.group("trait") if match else "unknown"
    if pooling is None:
        pooling = match.group("pooling") if match else "unknown"
    try:
        return PersonaVector(
            trait=trait,
            model_id=model_id,
            values=data.detach().to(torch.float32),
            pooling=pooling,
            method=method,
            layers=tuple(layers or ()),
            trait_version=trait_version,
            provenance=prov,
        )
    except VectorError as exc:
        raise VectorError(f"{p}: {exc}") from exc

"""pvdata's own vector file: safetensors with one tensor ("values", [L+1, H] float32) and metadata.

safetensors metadata is a flat str -> str map; scalar fields are stored as their own keys (readable
with any safetensors viewer) and the structured ones (layers, provenance) as JSON. Loading recomputes
the vector id and refuses a file whose content no longer matches the id it records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch

from pvdata.errors import VectorError
from pvdata.vectors.formats._files import atomic_path, existing_file
from pvdata.vectors.persona_vector import PersonaVector

FORMAT_NAME = "pvdata.persona_vector"
FORMAT_VERSION = "1"
TENSOR_KEY = "values"


def save_safetensors(vector: PersonaVector, path: str | os.PathLike[str]) -> Path:
    """Write ``vector`` losslessly: values bit-exact, every metadata field kept."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vector_id": vector.vector_id,
        "trait": vector.trait,
        "model_id": vector.model_id,
        "pooling": vector.pooling,
        "method": vector.method,
        "n_pos": str(vector.n_pos),
        "n_neg": str(vector.n_neg),
        "layers": json.dumps(list(vector.layers)),
        "trait_version": vector.trait_version,
        "provenance": json.dumps(vector.provenance, sort_keys=True),
        "n_layers": str(vector.n_layers),
        "hidden_size": str(vector.hidden_size),
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        safetensors.torch.save_file({TENSOR_KEY: vector.values.contiguous()}, str(tmp), metadata=meta)
    return target


def load_safetensors(path: str | os.PathLike[str]) -> PersonaVector:
    """Read a file written by :func:`save_safetensors`; anything else is a VectorError naming the file."""
    p = existing_file(path)
    try:
        with safetensors.safe_open(str(p), framework="pt") as f:  # type: ignore[no-untyped-call]
            meta: dict[str, str] = f.metadata() or {}
            keys = list(f.keys())
            values = f.get_tensor(TENSOR_KEY) if TENSOR_KEY in keys else None
    except VectorError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a non-safetensors file
        raise VectorError(f"{p}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT_NAME or values is None:
        raise VectorError(
            f"{p}: not a pvdata vector file (no '{FORMAT_NAME}' metadata and '{TENSOR_KEY}' tensor; "
            f"found tensors {keys}); for a raw [L+1, H] tensor use a .pt file with format='research'"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise VectorError(
            f"{p}: pvdata vector format version {meta.get('format_version')!r} is not supported "
            f"(this pvdata reads version {FORMAT_VERSION}); upgrade pvdata"
        )
    try:
        fields: dict[str, Any] = {
            "trait": meta["trait"],
            "model_id": meta["model_id"],
            "values": values,
            "pooling": meta["pooling"],
            "method": meta["method"],
            "n_pos": int(meta["n_pos"]),
            "n_neg": int(meta["n_neg"]),
            "layers": tuple(json.loads(meta["layers"])),
            "trait_version": meta.get("trait_version", ""),
            "provenance": json.loads(meta.get("provenance", "{}")),
        }
    except (KeyError, ValueError) as exc:
        raise VectorError(f"{p}: pvdata vector metadata is incomplete or malformed ({exc!r})") from exc
    try:
        vector = PersonaVector(**fields)
    except VectorError as exc:
        raise VectorError(f"{p}: {exc}") from exc
    if vector.vector_id != meta.get("vector_id"):
        raise VectorError(
            f"{p}: content does not match its recorded vector_id {meta.get('vector_id')!r} (computed "
            f"{vector.vector_id!r}): the file was modified or corrupted"
        )
    return vector

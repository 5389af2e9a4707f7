"""llama.cpp control vectors (GGUF), the file ``llama-cli --control-vector`` and repeng read and write.

Layout: ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (string),
``controlvector.layer_count`` (uint32, the number of direction tensors, as repeng and llama.cpp's
cvector-generator write it; llama.cpp's loader does not read it), and one 1-D float32 tensor
``direction.N`` of width H per steered layer.

Layer mapping, verified by reading the sources (ggml-org/llama.cpp and vgel/repeng):

- ``common/common.cpp`` (``common_control_vector_load_one``) rejects a ``direction.0`` tensor and writes
  ``direction.N`` (N >= 1) to offset ``(N - 1) * n_embd`` of a flat buffer, scaled by the user's
  strength; ``src/llama-adapter.cpp`` (``llama_adapter_cvec::apply``) fills ``tensors[il]`` from offset
  ``(il - 1) * n_embd`` for il = 1..n_layer-1 and leaves ``tensors[0]`` empty ("there's never a tensor
  for layer 0"). So ``direction.N`` is the tensor for llama.cpp layer index il = N.
- Each model graph (e.g. ``src/models/granite.cpp``) calls ``build_cvec(cur, il)`` on the block's
  output, after the FFN residual add, inside ``for (il = 0; il < n_layer; ++il)``: il is the 0-based
  block index. So ``direction.N`` is added to the output of 0-based block N.
- repeng (``repeng/extract.py``, ``repeng/control.py``) keys directions by the 0-based index into
  ``model.layers``, reads them from ``hidden_states[index + 1]``, adds them to that block's output, and
  exports them as ``direction.{index}``: the same convention.

pvdata's layer l is the output of 1-based block l = 0-based block l-1, hence **pvdata layer l <->
direction.(l-1)**. Layer 1 (first block) and layer 0 (embedding) cannot be expressed: llama.cpp
refuses ``direction.0``. ``--control-vector-layer-range A B`` in llama.cpp counts in direction indices,
i.e. pvdata layers A+1..B+1.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from pvdata.errors import VectorError
from pvdata.vectors.formats._files import atomic_path, existing_file
from pvdata.vectors.persona_vector import PersonaVector, format_layers

ARCH = "controlvector"
KEY_MODEL_HINT = f"{ARCH}.model_hint"
KEY_LAYER_COUNT = f"{ARCH}.layer_count"
KEY_PVDATA = "pvdata.vector"  # extra JSON metadata; llama.cpp and repeng ignore unknown keys
_DIRECTION = re.compile(r"^direction\.(\d+)$")


def direction_index(layer: int) -> int:
    """The ``direction.N`` index for pvdata layer ``layer`` (output of block l): N = l - 1."""
    return layer - 1


def layer_of_direction(index: int) -> int:
    """The pvdata layer that ``direction.index`` steers: l = N + 1."""
    return index + 1


def export_gguf(
    vector: PersonaVector,
    path: str | os.PathLike[str],
    *,
    coef: float = 1.0,
    layers: Iterable[int] | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write ``coef * vector[l]`` for each layer as ``direction.(l-1)``.

    ``layers`` defaults to the vector's computed layers from 2 up (layers 0 and 1 have no slot in
    llama.cpp). ``model_hint`` defaults to the vector's model id; llama.cpp does not check it, repeng
    stores its ``model_type`` there.
    """
    coef = float(coef)
    if not np.isfinite(coef):
        raise VectorError(f"coef must be a finite number, got {coef}")
    if layers is None:
        chosen = [layer for layer in vector.layers if layer >= 2]
        if not chosen:
            raise VectorError(
                f"vector {vector.vector_id} has no layer a llama.cpp control vector can hold (computed: "
                f"{format_layers(vector.layers)}; llama.cpp steers layers 2..{vector.n_layers})"
            )
    else:
        chosen = sorted({vector.check_layer(layer) for layer in layers})
        low = [layer for layer in chosen if layer < 2]
        if low:
            raise VectorError(
                f"layer {low[0]} cannot be written to a llama.cpp control vector: direction.N steers the "
                "output of 0-based block N and llama.cpp rejects direction.0, so only layers "
                f"2..{vector.n_layers} (outputs of blocks 2..{vector.n_layers}) can be exported"
            )
        missing = [layer for layer in chosen if layer not in vector.layers]
        if missing:
            raise VectorError(
                f"layers {format_layers(missing)} were not computed for vector {vector.vector_id} "
                f"(computed: {format_layers(vector.layers)}); their rows are zero"
            )
        if not chosen:
            raise VectorError("layers is empty: name at least one layer to export")

    info = {
        "source_vector_id": vector.vector_id,
        "trait": vector.trait,
        "model_id": vector.model_id,
        "pooling": vector.pooling,
        "method": vector.method,
        "n_pos": vector.n_pos,
        "n_neg": vector.n_neg,
        "trait_version": vector.trait_version,
        "n_layers": vector.n_layers,
        "coef": coef,
        "layers": chosen,
        "layer_mapping": "direction.N = pvdata layer N+1 (output of 0-based block N)",
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(KEY_MODEL_HINT, model_hint or vector.model_id)
        writer.add_uint32(KEY_LAYER_COUNT, len(chosen))
        writer.add_string(KEY_PVDATA, json.dumps(info, sort_keys=True))
        for layer in chosen:
            row = (vector.values[layer] * coef).numpy().astype(np.float32, copy=True)
            writer.add_tensor(f"direction.{direction_index(layer)}", row)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target


def _string_field(reader: gguf.GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.types or field.types[0] != gguf.GGUFValueType.STRING:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def import_gguf(
    path: str | os.PathLike[str],
    *,
    n_layers: int | None = None,
    trait: str | None = None,
    model_id: str | None = None,
    pooling: str | None = None,
    method: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> PersonaVector:
    """Read a control vector into [L+1, H] rows (direction.N -> layer N+1), coef already applied.

    L comes from ``n_layers``, else from pvdata's own metadata, else the highest layer present (pass
    ``n_layers`` for foreign files so the vector fits its model). ``direction.0`` (which llama.cpp
    refuses but repeng can write) is read as layer 1, per repeng's meaning.
    """
    p = existing_file(path)
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as exc:  # gguf raises ValueError/struct errors for a non-GGUF file
        raise VectorError(f"{p}: not a readable GGUF file ({exc})") from exc
    arch = _string_field(reader, "general.architecture")
    if arch != ARCH:
        raise VectorError(
            f"{p}: general.architecture is {arch!r}, not {ARCH!r}: not a llama.cpp control vector"
        )
    raw_info = _string_field(reader, KEY_PVDATA)
    info: dict[str, Any] = {}
    if raw_info:
        try:
            info = json.loads(raw_info)
        except ValueError:
            info = {}

    rows: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if match is None:
            continue
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise VectorError(
                f"{p}: tensor {tensor.name} is {tensor.tensor_type.name} with shape "
                f"{list(tensor.shape)}; control vector directions are 1-D F32"
            )
        rows[layer_of_direction(int(match.group(1)))] = np.array(tensor.data, dtype=np.float32)
    if not rows:
        raise VectorError(f"{p}: no direction.N tensors: an empty control vector")
    widths = {r.shape[0] for r in rows.values()}
    if len(widths) != 1:
        raise VectorError(f"{p}: direction tensors have different widths {sorted(widths)}")
    width = widths.pop()
    top = max(rows)
    if n_layers is None:
        n_layers = int(info.get("n_layers", top))
    if top > n_layers:
        raise VectorError(
            f"{p}: has direction.{direction_index(top)} (layer {top}) but the model has {n_layers} layers"
        )
    values = torch.zeros(n_layers + 1, width, dtype=torch.float32)
    for layer, row in rows.items():
        values[layer] = torch.from_numpy(row)

    prov: dict[str, Any] = {
        "imported_from": "gguf",
        "source_file": p.name,
        "model_hint": _string_field(reader, KEY_MODEL_HINT),
    }
    if info:
        prov["exported_as"] = {k: info[k] for k in ("source_vector_id", "coef") if k in info}
    prov.update(provenance or {})
    try:
        return PersonaVector(
            trait=trait or str(info.get("trait", "unknown")),
            model_id=model_id or str(info.get("model_id") or prov["model_hint"] or "unknown"),
            values=values,
            pooling=pooling or str(info.get("pooling", "unknown")),
            method=method or str(info.get("method", "unknown")),
            n_pos=int(info.get("n_pos", 0)),
            n_neg=int(info.get("n_neg", 0)),
            layers=tuple(sorted(rows)),
            trait_version=str(info.get("trait_version", "")),
            provenance=prov,
        )
    except VectorError as exc:
        raise VectorError(f"{p}: {exc}") from exc

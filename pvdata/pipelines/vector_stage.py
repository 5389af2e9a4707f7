"""Persona vectors from stored activations: streamed float64 sums per (side, pooling, layer).

Streaming keeps memory flat at paper scale (2000 rollouts x 29 layers x 3 poolings x 3584 floats would
be 2.5 GB at once); the result equals `mean(pos) - mean(neg)` over the kept rollouts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pvdata.errors import VectorError
from pvdata.vectors import PersonaVector


def side_means(
    con: Any, activation_run_id: str, sides: Mapping[str, str]
) -> tuple[dict[tuple[str, str, int], np.ndarray], dict[tuple[str, str, int], int]]:
    """Sums and counts keyed by (side, pooling, layer) over the activations of the given sources."""
    kept = pa.table({"source_id": list(sides), "side": list(sides.values())})
    con = con.cursor()  # its own result stream: the caller's connection may hold an unfinished one
    con.register("pv_kept_sources", kept)
    try:
        reader = con.sql(
            "SELECT k.side, a.pooling, a.layer, a.values FROM activations_all a "
            "JOIN pv_kept_sources k USING (source_id) WHERE a.run_id = $run",
            params={"run": activation_run_id},
        ).to_arrow_reader(8192)
        sums: dict[tuple[str, str, int], np.ndarray] = {}
        counts: dict[tuple[str, str, int], int] = {}
        for batch in reader:
            n = batch.num_rows
            if n == 0:
                continue
            col = batch.column(3)
            flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
            values = flat.reshape(n, -1)
            keys = list(
                zip(
                    batch.column(0).to_pylist(),
                    batch.column(1).to_pylist(),
                    batch.column(2).to_pylist(),
                    strict=True,
                )
            )
            for key in set(keys):
                rows = [i for i, k in enumerate(keys) if k == key]
                part = values[rows].sum(axis=0)
                sums[key] = sums[key] + part if key in sums else part
                counts[key] = counts.get(key, 0) + len(rows)
    finally:
        con.unregister("pv_kept_sources")
    return sums, counts


def build_vectors(
    con: Any,
    activation_run_id: str,
    sides: Mapping[str, str],
    *,
    trait: str,
    trait_version: str,
    model_id: str,
    n_layers: int,
    poolings: Sequence[str],
    layers: Sequence[int],
    provenance: Mapping[str, Any],
) -> list[PersonaVector]:
    """One mean-difference vector per pooling over `layers` (rows of other layers stay zero)."""
    n_pos = sum(1 for s in sides.values() if s == "pos")
    n_neg = sum(1 for s in sides.values() if s == "neg")
    if n_pos == 0 or n_neg == 0:
        raise VectorError(
            f"cannot build a vector: {n_pos} pos and {n_neg} neg rollouts were kept; lower --threshold, "
            "generate more rollouts (--n-per-question), or use --filter none"
        )
    sums, counts = side_means(con, activation_run_id, sides)
    vectors = []
    for pooling in poolings:
        values = None
        for layer in layers:
            pos_key, neg_key = ("pos", pooling, layer), ("neg", pooling, layer)
            if pos_key not in sums or neg_key not in sums:
                raise VectorError(f"no stored {pooling} activations at layer {layer} for one side")
            diff = sums[pos_key] / counts[pos_key] - sums[neg_key] / counts[neg_key]
            if values is None:
                values = torch.zeros(n_layers + 1, diff.shape[0], dtype=torch.float32)
            values[layer] = torch.from_numpy(diff.astype(np.float32))
        assert values is not None
        vectors.append(
            PersonaVector(
                trait=trait,
                model_id=model_id,
                values=values,
                pooling=pooling,
                method="mean_diff",
                n_pos=counts[("pos", pooling, layers[0])],
                n_neg=counts[("neg", pooling, layers[0])],
                layers=tuple(layers),
                trait_version=trait_version,
                provenance=dict(provenance),
            )
        )
    return vectors

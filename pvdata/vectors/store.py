"""Persona vectors in the warehouse `vectors` table: one row per computed layer, reassembled exactly."""

from __future__ import annotations

import json
from typing import Any

import torch

from pvdata.errors import VectorError
from pvdata.vectors.persona_vector import PersonaVector


def vector_columns(vector: PersonaVector, run_id: str | None = None) -> dict[str, list[Any]]:
    """Column lists for `TableWriter.write_columns`: the rows of the layers the vector was built at."""
    layers = list(vector.layers) or list(range(vector.n_layers + 1))
    norms = vector.norms()
    columns: dict[str, list[Any]] = {
        "vector_id": [vector.vector_id] * len(layers),
        "trait": [vector.trait] * len(layers),
        "trait_version": [vector.trait_version] * len(layers),
        "model_id": [vector.model_id] * len(layers),
        "layer": layers,
        "pooling": [vector.pooling] * len(layers),
        "method": [vector.method] * len(layers),
        "n_pos": [vector.n_pos] * len(layers),
        "n_neg": [vector.n_neg] * len(layers),
        "norm": [float(norms[layer]) for layer in layers],
        "values": [vector.values[layer].tolist() for layer in layers],
        "n_layers": [vector.n_layers] * len(layers),
        "provenance": [json.dumps(vector.provenance, sort_keys=True)] * len(layers),
    }
    if run_id is not None:
        columns["run_id"] = [run_id] * len(layers)
    return columns


def from_rows(rows: list[dict[str, Any]]) -> PersonaVector:
    """Rebuild one PersonaVector from its warehouse rows (all with the same vector_id)."""
    if not rows:
        raise VectorError("no rows for this vector")
    first = rows[0]
    n_layers = first.get("n_layers") or max(int(r["layer"]) for r in rows)
    width = len(first["values"])
    values = torch.zeros(n_layers + 1, width, dtype=torch.float32)
    layers = sorted({int(r["layer"]) for r in rows})  # the same vector may come from several runs
    for row in rows:
        values[int(row["layer"])] = torch.tensor(list(row["values"]), dtype=torch.float32)
    vector = PersonaVector(
        trait=first["trait"] or "unknown",
        model_id=first["model_id"] or "unknown",
        values=values,
        pooling=first["pooling"] or "unknown",
        method=first["method"] or "mean_diff",
        n_pos=int(first["n_pos"] or 0),
        n_neg=int(first["n_neg"] or 0),
        layers=tuple(layers),
        trait_version=first["trait_version"] or "",
        provenance=json.loads(first["provenance"]) if first.get("provenance") else {},
    )
    if vector.vector_id != first["vector_id"]:
        raise VectorError(
            f"vector {first['vector_id']} does not match its stored rows (rebuilt id {vector.vector_id}); "
            "the warehouse rows were changed after writing"
        )
    return vector


def read_vector(con: Any, vector_id: str) -> PersonaVector:
    """A vector by id (or unique id prefix) from a DuckDB connection made by `pvdata.warehouse.connect`."""
    ids = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT vector_id FROM vectors WHERE vector_id LIKE ? ORDER BY 1", [vector_id + "%"]
        ).fetchall()
    ]
    if not ids:
        raise VectorError(f"no vector {vector_id!r} in the warehouse; `pvdata vectors list` shows the ids")
    if len(ids) > 1:
        raise VectorError(f"vector id prefix {vector_id!r} is ambiguous: {', '.join(ids[:5])}")
    cur = con.execute(
        "SELECT vector_id, trait, trait_version, model_id, layer, pooling, method, n_pos, n_neg, "
        "values::FLOAT[] AS values, n_layers, provenance FROM vectors WHERE vector_id = ? ORDER BY layer",
        [ids[0]],
    )
    names = [d[0] for d in cur.description]
    return from_rows([dict(zip(names, row, strict=True)) for row in cur.fetchall()])


def latest_vector_id(con: Any, trait: str, model_id: str, pooling: str = "response_avg") -> str | None:
    """The newest succeeded vector of a trait for a model (the default when a command gets no --vector)."""
    row = con.execute(
        "SELECT v.vector_id FROM vectors AS v JOIN runs AS r ON r.run_id = v.run_id "
        "WHERE v.trait = ? AND v.model_id = ? AND v.pooling = ? "
        "ORDER BY r.finished_at DESC, v.vector_id LIMIT 1",
        [trait, model_id, pooling],
    ).fetchone()
    return None if row is None else str(row[0])


def resolve_vector(warehouse: Any, spec: str | None, *, trait: str, model_id: str) -> PersonaVector:
    """--vector as a file, a warehouse id (prefix), or empty: the latest response_avg vector of the trait.

    `warehouse` is a Warehouse; it is only opened when the vector comes from it."""
    from pathlib import Path

    from pvdata.vectors.io import load_vector

    if spec and Path(spec).is_file():
        return load_vector(spec)
    if spec:
        return read_vector(warehouse.connect(), spec)
    exists = warehouse.exists()
    found = latest_vector_id(warehouse.connect(), trait, model_id) if exists else None
    if found is None:
        raise VectorError(
            f"no {trait} vector for model {model_id} in the warehouse: run "
            f"`pvdata extract --trait {trait} --model {model_id}` first, or pass --vector FILE|ID"
        )
    return read_vector(warehouse.connect(), found)

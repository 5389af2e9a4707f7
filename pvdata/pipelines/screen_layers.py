"""Which vector and which layers a screen uses, resolved before any model loads.

Vectors: the --vector files or ids, else the latest response_avg vector of each trait for the model.
Layers: --layer (checked against the vector), else the best layer of the latest `pvdata evaluate`, else
the built layer nearest DEFAULT_DEPTH of the model's depth (chosen on held-out data: docs/SCREENING.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, VectorError

DEFAULT_DEPTH = 0.75  # default layer: this fraction of the model's depth (measured: docs/SCREENING.md)


def resolve_vectors(wh: Any, cfg: Any) -> tuple[dict[str, Any], dict[str, str | None]]:
    """trait -> vector: --vector files/ids by their trait, else the latest response_avg vector of the trait
    for the model in the warehouse (the error names the `pvdata extract` command that makes one)."""
    from pvdata.vectors.io import load_vector
    from pvdata.vectors.store import latest_vector_id, read_vector

    exists = wh.exists()
    given: dict[str, Any] = {}
    runs: dict[str, str | None] = {}
    for spec in cfg.vectors:
        if Path(spec).is_file():
            vector, run_id = load_vector(spec), None
        elif not exists:
            raise ConfigError(f"--vector {spec}: no such file, and warehouse {wh.root} does not exist")
        else:
            con = wh.connect()
            vector = read_vector(con, spec)
            run_id = _vector_run(con, vector.vector_id)
        if vector.trait in given:
            raise ConfigError(
                f"two vectors for trait {vector.trait!r} ({given[vector.trait].vector_id}, "
                f"{vector.vector_id}): give one vector per trait"
            )
        if cfg.traits and vector.trait not in cfg.traits:
            raise ConfigError(
                f"--vector {spec} is a {vector.trait!r} vector but --trait is {','.join(cfg.traits)}: add "
                f"{vector.trait} to --trait or drop the vector"
            )
        given[vector.trait], runs[vector.trait] = vector, run_id
    traits = list(cfg.traits) or list(given)
    out: dict[str, Any] = {}
    for trait in traits:
        if trait in given:
            out[trait] = given[trait]
            continue
        from pvdata.traits import load_trait

        load_trait(trait)  # an unknown trait is a ConfigError that lists the known ones
        found = latest_vector_id(wh.connect(), trait, cfg.model) if exists else None
        if found is None:
            raise VectorError(
                f"no {trait} vector for model {cfg.model} in warehouse {wh.root}: make one with "
                f"`pvdata extract --trait {trait} --model {cfg.model} --warehouse {wh.root}`, or pass "
                "--vector FILE"
            )
        con = wh.connect()
        out[trait] = read_vector(con, found)
        runs[trait] = _vector_run(con, found)
    return out, {t: runs.get(t) for t in out}


def _vector_run(con: Any, vector_id: str) -> str | None:
    row = con.execute(
        "SELECT v.run_id FROM vectors AS v JOIN runs AS r USING (run_id) WHERE v.vector_id = ? "
        "ORDER BY r.finished_at LIMIT 1",
        [vector_id],
    ).fetchone()
    return None if row is None else str(row[0])


def choose_layers(wh: Any, cfg: Any, vector: Any) -> tuple[list[int], str]:
    """--layer if given (checked against the vector), else the default layer and why it was chosen."""
    built = [layer for layer in vector.layers if layer > 0] or list(range(1, vector.n_layers + 1))
    if cfg.layers:
        for layer in cfg.layers:
            if isinstance(layer, bool) or not 0 <= layer <= vector.n_layers:
                raise ConfigError(
                    f"--layer {layer} is out of range: the {vector.trait} vector {vector.vector_id} is for a "
                    f"model with {vector.n_layers} blocks, valid layers are 0..{vector.n_layers}"
                )
            if vector.layers and layer not in vector.layers:
                from pvdata.vectors import format_layers

                raise ConfigError(
                    f"--layer {layer}: the {vector.trait} vector {vector.vector_id} was built at layers "
                    f"{format_layers(vector.layers)} only"
                )
        return sorted(dict.fromkeys(cfg.layers)), "--layer"
    return default_layer(wh, cfg.model, vector, built)


def default_layer(wh: Any, model: str, vector: Any, built: Sequence[int]) -> tuple[list[int], str]:
    """The best layer of the latest succeeded `pvdata evaluate` of this trait and model (when the vector
    has it), else the built layer nearest DEFAULT_DEPTH of the model's depth (SmolLM2: 23 of 30, where
    all three methods separate held-out evil answers; Qwen2.5-7B: 21 of 28, near the paper's 20)."""
    best = _evaluated_layer(wh, vector.trait, model) if wh.exists() else None
    if best is not None and best in built:
        return [best], f"best layer of the latest `pvdata evaluate` of {vector.trait} on {model}"
    target = int(DEFAULT_DEPTH * vector.n_layers + 0.5)  # round half up: 30 blocks -> layer 23
    layer = min(built, key=lambda x: (abs(x - target), x))
    return [layer], f"default: {DEFAULT_DEPTH:g} of the depth ({vector.n_layers} blocks)"


def _evaluated_layer(wh: Any, trait: str, model: str) -> int | None:
    row = (
        wh.connect()
        .execute(
            "SELECT CAST(json_extract(stats, '$.best.layer') AS INTEGER) FROM runs "
            "WHERE kind = 'evaluate' AND status = 'succeeded' "
            "AND json_extract_string(config, '$.config.trait') = ? "
            "AND json_extract_string(config, '$.config.model') = ? "
            "AND json_extract(stats, '$.best.layer') IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT 1",
            [trait, model],
        )
        .fetchone()
    )
    return None if row is None or row[0] is None else int(row[0])

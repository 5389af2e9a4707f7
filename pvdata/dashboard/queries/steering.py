"""Queries of the Steering page: evaluate runs, their grid of steered cells and the best cell."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pvdata.dashboard.queries.sql import Con, _df, _standard


def steering_runs(con: Con) -> pd.DataFrame:
    """Evaluate runs (newest first): trait, model, vector, layers and coefs asked for, cells, floor."""
    sql = """
        SELECT run_id, model_id, finished_at,
               json_extract_string(config, '$.config.trait') AS trait,
               json_extract_string(config, '$.config.vector') AS vector,
               CAST(json_extract(config, '$.config.layers') AS VARCHAR) AS layers,
               CAST(json_extract(config, '$.config.coefs') AS VARCHAR) AS coefs,
               TRY_CAST(json_extract(config, '$.config.coherence_floor') AS DOUBLE) AS coherence_floor,
               len(parent_run_ids) AS n_parents
        FROM runs WHERE kind = 'evaluate' AND status = 'succeeded'
        ORDER BY finished_at DESC NULLS LAST, run_id
    """
    return _df(con, sql)


def steering_grid(con: Con, evaluate_run_id: str) -> pd.DataFrame:
    """One row per cell (layers x coef x judge model) of an evaluate run, from steering_sweep.sql over the
    run's parent generate runs: trait_mean, coherence_mean, n_generations, n_valid, trait_null_rate.
    `layer` is the steered layers as text ('2', '2,3'; 'none' when unsteered)."""
    sql = f"""
        WITH cells AS (
            SELECT unnest(parent_run_ids) AS run_id FROM runs WHERE run_id = $1
        )
        SELECT replace(replace(s.layers, '[', ''), ']', '') AS layer, s.coef, s.trait, s.mode,
               s.vector_id, s.judge_model, s.trait_mean, s.coherence_mean, s.n_generations, s.n_valid,
               s.trait_null_rate, s.n_coherence, s.run_id AS generate_run
        FROM ({_standard("steering_sweep")}) AS s
        WHERE s.run_id IN (SELECT run_id FROM cells)
        ORDER BY s.judge_model NULLS FIRST, s.layers, s.coef
    """
    return _df(con, sql, [evaluate_run_id])


def best_cell(grid: pd.DataFrame, coherence_floor: float = 50.0) -> dict[str, Any] | None:
    """The steered cell with the highest trait mean whose coherence mean reaches the floor, among cells
    steered towards the trait (coef > 0), as `pvdata evaluate` picks its best layer."""
    coef = pd.to_numeric(grid["coef"], errors="coerce").fillna(0.0)
    ok = grid[(grid["layer"] != "none") & grid["trait_mean"].notna() & (coef > 0)]
    ok = ok[ok["coherence_mean"].fillna(0.0) >= coherence_floor]
    if ok.empty:
        return None
    return dict(ok.loc[ok["trait_mean"].idxmax()])

"""Queries of the Vectors page: the stored persona vectors, their norms per layer and their cosines."""

from __future__ import annotations

import pandas as pd

from pvdata.dashboard.queries.sql import Con, _df


def vectors_overview(con: Con, run_id: str | None = None) -> pd.DataFrame:
    """One row per vector: trait, model, pooling, method, sizes, stored layers and the runs that wrote it."""
    sql = """
        SELECT vector_id, any_value(trait) AS trait, any_value(model_id) AS model_id,
               any_value(pooling) AS pooling, any_value(method) AS method,
               any_value(n_pos) AS n_pos, any_value(n_neg) AS n_neg,
               array_to_string(list(DISTINCT layer ORDER BY layer), ',') AS layers,
               round(max(norm), 4) AS max_norm,
               array_to_string(list(DISTINCT run_id ORDER BY run_id), ', ') AS source_runs,
               any_value(trait_version) AS trait_version
        FROM vectors
        WHERE $1::VARCHAR IS NULL OR vector_id IN (SELECT vector_id FROM vectors WHERE run_id = $1)
        GROUP BY vector_id
        ORDER BY trait, model_id, pooling, vector_id
    """
    return _df(con, sql, [run_id])


def vector_models(con: Con) -> list[str]:
    return [r[0] for r in con.execute("SELECT DISTINCT model_id FROM vectors ORDER BY 1").fetchall()]


def vector_norms(con: Con, model_id: str | None = None) -> pd.DataFrame:
    """vector_id, trait, pooling, layer, norm (the stored `norm` column), per stored layer."""
    sql = """
        SELECT DISTINCT vector_id, trait, pooling, layer, norm FROM vectors
        WHERE $1::VARCHAR IS NULL OR model_id = $1
        ORDER BY trait, pooling, vector_id, layer
    """
    return _df(con, sql, [model_id])


def vector_layers(con: Con, model_id: str | None = None) -> list[int]:
    rows = con.execute(
        "SELECT DISTINCT layer FROM vectors WHERE $1::VARCHAR IS NULL OR model_id = $1 ORDER BY 1", [model_id]
    ).fetchall()
    return [int(r[0]) for r in rows]


def vector_poolings(con: Con, model_id: str | None = None) -> list[str]:
    rows = con.execute(
        "SELECT DISTINCT pooling FROM vectors WHERE $1::VARCHAR IS NULL OR model_id = $1 ORDER BY 1",
        [model_id],
    ).fetchall()
    return [str(r[0]) for r in rows if r[0] is not None]


def vector_cosines(con: Con, model_id: str, layer: int, pooling: str | None = None) -> pd.DataFrame:
    """Cosine similarity between every pair of vectors of a model at one layer (both orders, and the
    diagonal). `label` is `trait/pooling/id8`; null where a vector is zero at that layer."""
    sql = """
        WITH v AS (
            SELECT vector_id, any_value(trait) AS trait, any_value(pooling) AS pooling,
                   any_value("values")::FLOAT[] AS vals
            FROM vectors
            WHERE model_id = $1 AND layer = $2 AND ($3::VARCHAR IS NULL OR pooling = $3)
            GROUP BY vector_id
        ), labelled AS (
            SELECT *, concat_ws('/', trait, pooling, left(vector_id, 8)) AS label FROM v
        )
        SELECT a.label AS label_a, b.label AS label_b, a.trait AS trait_a, b.trait AS trait_b,
               a.vector_id AS vector_a, b.vector_id AS vector_b,
               CASE WHEN list_dot_product(a.vals, a.vals) > 0 AND list_dot_product(b.vals, b.vals) > 0
                    THEN list_cosine_similarity(a.vals, b.vals) END AS cosine
        FROM labelled AS a CROSS JOIN labelled AS b
        ORDER BY a.label, b.label
    """
    return _df(con, sql, [model_id, layer, pooling])

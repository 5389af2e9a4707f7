"""Queries of the Projection vs trait score page: runs with projections, their correlations with the
judged trait score and the points behind one."""

from __future__ import annotations

import pandas as pd

from pvdata.dashboard.queries.sql import Con, _df, _standard


def projection_runs(con: Con) -> pd.DataFrame:
    """Runs that wrote projections: kind, model, rows, traits, layers, projection kinds, and `judged`
    (whether any projection has a judged trait score to compare with). Runs with judged scores come
    first (e.g. `pvdata monitor`), then the others (e.g. a screen's projection stage), newest first."""
    sql = """
        WITH vt AS (SELECT DISTINCT vector_id, trait FROM vectors),
        judged AS (
            SELECT DISTINCT p.run_id FROM projections AS p
            JOIN vt USING (vector_id)
            JOIN judgments AS j ON j.generation_id = p.source_id AND j.metric = vt.trait
            WHERE j.score IS NOT NULL
        )
        SELECT p.run_id, any_value(r.kind) AS kind, any_value(r.model_id) AS model_id,
               any_value(r.finished_at) AS finished_at, count(*) AS n_rows,
               array_to_string(list(DISTINCT vt.trait ORDER BY vt.trait), ',') AS traits,
               array_to_string(list(DISTINCT p.layer ORDER BY p.layer), ',') AS layers,
               array_to_string(list(DISTINCT p.kind ORDER BY p.kind), ',') AS kinds,
               p.run_id IN (SELECT run_id FROM judged) AS judged
        FROM projections AS p LEFT JOIN runs AS r USING (run_id) LEFT JOIN vt USING (vector_id)
        GROUP BY p.run_id
        ORDER BY judged DESC, finished_at DESC NULLS LAST, p.run_id
    """
    return _df(con, sql)


def projection_correlations(con: Con, run_id: str | None = None) -> pd.DataFrame:
    """projection_vs_score.sql (Pearson r per run, trait, layer, vector, kind, judge model), one run."""
    sql = f"""
        SELECT * FROM ({_standard("projection_vs_score")}) AS c
        WHERE $1::VARCHAR IS NULL OR c.run_id = $1
        ORDER BY c.trait, c.kind, c.layer, c.judge_model
    """
    return _df(con, sql, [run_id])


def projection_points(
    con: Con, run_id: str, trait: str, layer: int, kind: str, judge_model: str | None = None
) -> pd.DataFrame:
    """The (projection, trait score) pairs behind one correlation, with the generation they come from."""
    sql = """
        WITH vt AS (SELECT DISTINCT vector_id, trait FROM vectors)
        SELECT p.source_id, p.vector_id, p.value AS projection, j.score, j.judge_model,
               g.question, g.system_prompt, g.polarity, g.answer
        FROM projections AS p
        JOIN vt ON vt.vector_id = p.vector_id
        JOIN judgments AS j ON j.generation_id = p.source_id AND j.metric = vt.trait
        LEFT JOIN (SELECT DISTINCT ON (generation_id) * FROM generations) AS g
            ON g.generation_id = p.source_id
        WHERE p.run_id = $1 AND vt.trait = $2 AND p.layer = $3 AND p.kind = $4
          AND p.value IS NOT NULL AND j.score IS NOT NULL
          AND ($5::VARCHAR IS NULL OR j.judge_model = $5)
        ORDER BY p.source_id, j.judge_model
    """
    return _df(con, sql, [run_id, trait, layer, kind, judge_model])

"""Queries of the dashboard's Experiments page: `pvdata experiment` runs, their datasets and their r.

Plain functions of a DuckDB connection returning DataFrames, tested without Streamlit like
pvdata.dashboard.queries (kept apart so neither module grows past a readable size).
"""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd

Con = duckdb.DuckDBPyConnection


def experiment_runs(con: Con) -> pd.DataFrame:
    """Experiment runs that wrote datasets (newest first): which experiment, traits, how many datasets."""
    sql = """
        SELECT p.run_id, any_value(p.experiment) AS experiment,
               array_to_string(list(DISTINCT p.trait ORDER BY p.trait), ',') AS traits,
               count(*) AS n_datasets, any_value(p.layer) AS layer,
               any_value(r.model_id) AS model_id, any_value(r.finished_at) AS finished_at
        FROM experiment_points AS p LEFT JOIN runs AS r USING (run_id)
        GROUP BY p.run_id
        ORDER BY finished_at DESC NULLS LAST, p.run_id
    """
    return con.execute(sql).df()


def experiment_points(con: Con, run_id: str) -> pd.DataFrame:
    """One row per dataset of the run: composition, pre-finetune means, shift, judged score."""
    sql = """
        SELECT trait, dataset, kind, fraction, method, seed, n_records, n_trait, layer,
               projection_difference_exact, projection_difference_approx, raw_projection, shift,
               judged_score, train_run_id
        FROM experiment_points WHERE run_id = $1
        ORDER BY trait, kind, method NULLS FIRST, fraction NULLS FIRST, seed NULLS FIRST, dataset
    """
    return con.execute(sql, [run_id]).df()


def experiment_stats(con: Con, run_id: str) -> pd.DataFrame:
    """Pearson and Spearman r with bootstrap 95% intervals, per trait (and "all") and x/y pair."""
    sql = """
        SELECT trait, x, y, n_datasets, pearson, pearson_ci_lo, pearson_ci_hi,
               spearman, spearman_ci_lo, spearman_ci_hi
        FROM experiment_stats WHERE run_id = $1
        ORDER BY trait = 'all', trait, x, y
    """
    return con.execute(sql, [run_id]).df()


def filter_outcomes(points: pd.DataFrame) -> pd.DataFrame:
    """A filter experiment's remainders, per trait: shift and the share of the contamination's shift each
    drop removed (pvdata.experiments.filtering.filter_table, the numbers of the run's summary.json)."""
    from pvdata.experiments.filtering import filter_table

    out: list[dict[str, Any]] = []
    for trait, part in points.groupby("trait", sort=True):
        records = [{k: (None if _missing(v) else v) for k, v in r.items()} for r in part.to_dict("records")]
        kinds = {r["kind"] for r in records}
        if not {"unfiltered", "clean"} <= kinds:
            continue
        table = filter_table(records)
        out += [
            {
                "trait": trait,
                **r,
                "unfiltered_shift": table["unfiltered_shift"],
                "clean_shift": table["clean_shift"],
            }
            for r in table["rows"]
        ]
    return pd.DataFrame(out)


def _missing(v: Any) -> bool:
    return isinstance(v, float) and pd.isna(v)


def filter_outcomes_of(con: Con, run_id: str) -> pd.DataFrame:
    return filter_outcomes(experiment_points(con, run_id))

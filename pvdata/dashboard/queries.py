"""The dashboard's queries: each takes a DuckDB connection from `pvdata.warehouse.connect` (or a cursor
of one) and returns a pandas DataFrame, a dict, or a plain value. They only read; Streamlit never
appears here, so every number a page shows can be checked without it.

The standard analyses (warehouse/queries/*.sql) are reused as subqueries and filtered here, so the
dashboard and `pvdata sql --query-name ...` agree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Literal

import duckdb
import pandas as pd

from pvdata.warehouse.queries import load_query

Con = duckdb.DuckDBPyConnection
WarehouseState = Literal["missing", "empty", "ok"]

# screening group: (dataset_id, trait, vector_id, layer, method); any part may be None
Group = tuple[str | None, str | None, str | None, int | None, str | None]


def _df(con: Con, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    return con.execute(sql, list(params)).df()


def _standard(name: str) -> str:
    """A standard query as a subquery body: no trailing semicolon, comments kept on their own lines."""
    return "\n" + load_query(name).strip().rstrip(";") + "\n"


def _json(text: Any) -> Any:
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


# -- warehouse -------------------------------------------------------------------------------------


def warehouse_state(root: str | os.PathLike[str]) -> WarehouseState:
    """missing (no such folder), empty (no run yet) or ok."""
    from pvdata.warehouse import files

    store = files.open_store(root)
    if not store.exists():
        return "missing"
    return "ok" if files.table_files(store, "runs") else "empty"


def table_counts(con: Con) -> dict[str, int]:
    """Rows per table in the default views (succeeded runs only; `runs`: one row per run)."""
    from pvdata.warehouse.schema import TABLES

    parts = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in TABLES)
    return {t: int(n) for t, n in con.execute(parts).fetchall()}


# -- runs ------------------------------------------------------------------------------------------


def run_status_counts(con: Con) -> pd.DataFrame:
    """kind, status, n: one row per kind and status."""
    return _df(con, "SELECT kind, status, count(*) AS n FROM runs GROUP BY ALL ORDER BY kind, status")


def runs_overview(
    con: Con, kinds: Sequence[str] = (), statuses: Sequence[str] = (), limit: int | None = None
) -> pd.DataFrame:
    """Runs, newest first: status, duration in seconds, parents and number of children."""
    where, params = [], []
    if kinds:
        where.append("r.kind IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(kinds))
    if statuses:
        where.append("r.status IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(statuses))
    sql = f"""
        WITH children AS (
            SELECT unnest(parent_run_ids) AS run_id, count(*) AS n_children FROM runs GROUP BY 1
        )
        SELECT r.run_id, r.kind, r.status, r.model_id, r.started_at, r.finished_at,
               round(epoch(r.finished_at) - epoch(r.started_at), 3) AS seconds,
               r.attempt, len(coalesce(r.parent_run_ids, [])) AS n_parents,
               coalesce(c.n_children, 0) AS n_children,
               array_to_string(r.parent_run_ids, ', ') AS parents, r.error
        FROM runs AS r LEFT JOIN children AS c USING (run_id)
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY r.started_at DESC NULLS LAST, r.run_id
        {f"LIMIT {int(limit)}" if limit else ""}
    """
    return _df(con, sql, params)


def run_detail(con: Con, run_id: str) -> dict[str, Any] | None:
    """The latest event of a run with config and stats parsed, or None."""
    cur = con.execute(
        "SELECT *, round(epoch(finished_at) - epoch(started_at), 3) AS seconds FROM runs WHERE run_id = ?",
        [run_id],
    )
    cols = [d[0] for d in cur.description or []]
    row = cur.fetchone()
    if row is None:
        return None
    out = dict(zip(cols, row, strict=True))
    out["config"] = _json(out["config"])
    out["stats"] = _json(out["stats"])
    out["parent_run_ids"] = list(out["parent_run_ids"] or [])
    return out


def run_lineage(con: Con, run_id: str) -> pd.DataFrame:
    """The run, its ancestors (depth < 0) and descendants (depth > 0), nearest depth, with kind and status."""
    sql = """
        WITH RECURSIVE
        edges AS (SELECT unnest(parent_run_ids) AS parent, run_id AS child FROM runs),
        up(run_id, depth, path) AS (
            SELECT ?::VARCHAR, 0, [?::VARCHAR]
            UNION ALL
            SELECT e.parent, up.depth - 1, list_append(up.path, e.parent)
            FROM up JOIN edges AS e ON e.child = up.run_id
            WHERE NOT list_contains(up.path, e.parent)
        ),
        down(run_id, depth, path) AS (
            SELECT ?::VARCHAR, 0, [?::VARCHAR]
            UNION ALL
            SELECT e.child, down.depth + 1, list_append(down.path, e.child)
            FROM down JOIN edges AS e ON e.parent = down.run_id
            WHERE NOT list_contains(down.path, e.child)
        ),
        near AS (
            SELECT run_id, max(depth) AS depth FROM up WHERE depth < 0 GROUP BY 1
            UNION ALL SELECT run_id, min(depth) FROM down GROUP BY 1
        )
        SELECT n.run_id,
               CASE WHEN n.depth < 0 THEN 'ancestor' WHEN n.depth = 0 THEN 'self' ELSE 'descendant' END
                   AS relation,
               n.depth, r.kind, r.status, r.model_id, r.finished_at
        FROM near AS n LEFT JOIN runs AS r USING (run_id)
        ORDER BY n.depth, n.run_id
    """
    return _df(con, sql, [run_id] * 4)


def lineage_edges(con: Con, run_ids: Sequence[str]) -> pd.DataFrame:
    """parent, child edges among the given runs."""
    sql = """
        SELECT parent, child FROM (SELECT unnest(parent_run_ids) AS parent, run_id AS child FROM runs)
        WHERE parent IN (SELECT unnest(?::VARCHAR[])) AND child IN (SELECT unnest(?::VARCHAR[]))
        ORDER BY parent, child
    """
    return _df(con, sql, [list(run_ids), list(run_ids)])


def lineage_dot(lineage: pd.DataFrame, edges: pd.DataFrame, focus: str) -> str:
    """A Graphviz DOT graph of a lineage: one box per run (kind and id), the focus run bold."""
    colors = {"succeeded": "#d8f0d8", "failed": "#f6d0d0", "running": "#fff2c2"}
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontsize=10];']
    for row in lineage.itertuples(index=False):
        label = f"{row.kind or '?'}\\n{row.run_id}"
        fill = colors.get(str(row.status), "#eeeeee")
        bold = ', penwidth=3, fontname="bold"' if row.run_id == focus else ""
        lines.append(f'  "{row.run_id}" [label="{label}", fillcolor="{fill}"{bold}];')
    for edge in edges.itertuples(index=False):
        lines.append(f'  "{edge.parent}" -> "{edge.child}";')
    lines.append("}")
    return "\n".join(lines)


def run_table_rows(con: Con, run_id: str) -> pd.DataFrame:
    """table, rows: what a run committed to each table (failed runs included: the `_all` views)."""
    from pvdata.warehouse.schema import TABLES

    parts = " UNION ALL ".join(
        f"SELECT '{t}' AS \"table\", count(*) AS rows FROM {t}_all WHERE run_id = $1" for t in TABLES
    )
    df = _df(con, f"SELECT * FROM ({parts}) WHERE rows > 0 AND \"table\" <> 'runs'", [run_id])
    return df.reset_index(drop=True)


# -- vectors ---------------------------------------------------------------------------------------


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


# -- steering --------------------------------------------------------------------------------------


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


# -- projection vs trait score ---------------------------------------------------------------------


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


# -- screening -------------------------------------------------------------------------------------


def screen_runs(con: Con) -> pd.DataFrame:
    """Runs that wrote screenings (newest first): datasets, traits, samples and how many were flagged."""
    sql = """
        SELECT s.run_id, any_value(r.model_id) AS model_id, any_value(r.finished_at) AS finished_at,
               array_to_string(list(DISTINCT s.dataset_id ORDER BY s.dataset_id), ',') AS datasets,
               array_to_string(list(DISTINCT s.trait ORDER BY s.trait), ',') AS traits,
               count(DISTINCT s.sample_id) AS n_samples,
               count(DISTINCT s.sample_id) FILTER (WHERE s.flagged) AS n_flagged
        FROM screenings AS s LEFT JOIN runs AS r USING (run_id)
        GROUP BY s.run_id
        ORDER BY finished_at DESC NULLS LAST, s.run_id
    """
    return _df(con, sql)


def screen_run_of_sample(con: Con, sample_id: str) -> str | None:
    """The newest screen run that scored a sample (for a deep link that names only the sample)."""
    row = con.execute(
        "SELECT s.run_id FROM screenings AS s LEFT JOIN runs AS r USING (run_id) WHERE s.sample_id = ? "
        "ORDER BY r.finished_at DESC NULLS LAST, s.run_id LIMIT 1",
        [sample_id],
    ).fetchone()
    return None if row is None else str(row[0])


def screening_groups(con: Con, run_id: str) -> pd.DataFrame:
    """screening_summary.sql for one run: one row per (dataset, trait, vector, layer, method)."""
    sql = f"SELECT * FROM ({_standard('screening_summary')}) AS s WHERE s.run_id = $1"
    return _df(con, sql, [run_id])


def group_of(row: dict[str, Any]) -> Group:
    """The (dataset_id, trait, vector_id, layer, method) of a screening_groups row, nulls as None."""

    def value(key: str) -> Any:
        v = row.get(key)
        return None if v is None or bool(pd.isna(v)) else v

    layer = value("layer")
    return (
        value("dataset_id"),
        value("trait"),
        value("vector_id"),
        None if layer is None else int(layer),
        value("method"),
    )


def _find_threshold(value: Any) -> float | None:
    """The first numeric `threshold` (or `score_threshold`) key in a nested config or stats object."""
    if isinstance(value, dict):
        for key in ("threshold", "score_threshold"):
            found = value.get(key)
            if isinstance(found, int | float) and not isinstance(found, bool):
                return float(found)
        for child in value.values():
            got = _find_threshold(child)
            if got is not None:
                return got
    return None


_GROUP_WHERE = """
    run_id = $1 AND dataset_id IS NOT DISTINCT FROM $2 AND trait IS NOT DISTINCT FROM $3
    AND vector_id IS NOT DISTINCT FROM $4 AND layer IS NOT DISTINCT FROM $5 AND method IS NOT DISTINCT FROM $6
"""


def has_column(con: Con, view: str, column: str) -> bool:
    """Whether a view has a column (tables gain columns; the dashboard reads what is there)."""
    rows = con.execute(f"SELECT column_name FROM (DESCRIBE {view})").fetchall()
    return column in {r[0] for r in rows}


def screen_threshold(con: Con, run_id: str, group: Group) -> tuple[float | None, str]:
    """The score threshold of a screening and where it came from: the rows' `threshold` column, else a
    numeric `threshold` key in the run's stats or config, else the lowest score of a flagged sample
    ('inferred'), else (None, 'none')."""
    if has_column(con, "screenings", "threshold"):
        row = con.execute(
            f"SELECT max(threshold) FROM screenings WHERE {_GROUP_WHERE}", [run_id, *group]
        ).fetchone()
        if row is not None and row[0] is not None:
            basis = screen_basis(con, run_id, group)
            return float(row[0]), "screenings.threshold" + (f" ({basis})" if basis else "")
    row = con.execute("SELECT stats, config FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is not None:
        for text, source in ((row[0], "run stats"), (row[1], "run config")):
            found = _find_threshold(_json(text))
            if found is not None:
                return found, source
    low = con.execute(
        f"SELECT min(score) FROM screenings WHERE {_GROUP_WHERE} AND flagged", [run_id, *group]
    ).fetchone()
    if low is not None and low[0] is not None:
        return float(low[0]), "inferred (lowest flagged score)"
    return None, "none"


def screen_basis(con: Con, run_id: str, group: Group) -> str | None:
    """How `pvdata screen` set a group's threshold, in words ('top 3 of 12 scored samples', '95th
    percentile of the reference, n=500'): the matching entry of the run's stats `groups`."""
    row = con.execute("SELECT stats FROM runs WHERE run_id = ?", [run_id]).fetchone()
    stats = _json(row[0]) if row is not None else None
    groups = stats.get("groups") if isinstance(stats, dict) else None
    _, trait, vector_id, layer, method = group
    for g in groups if isinstance(groups, list) else []:
        if not isinstance(g, dict):
            continue
        same = (g.get("trait"), g.get("vector_id"), g.get("layer"), g.get("method")) == (
            trait,
            vector_id,
            layer,
            method,
        )
        if same and isinstance(g.get("basis"), str):
            return str(g["basis"])
    return None


def score_histogram(con: Con, run_id: str, group: Group, bins: int = 40) -> pd.DataFrame:
    """bin_start, bin_end, flagged, n: screening scores binned in SQL (so 200k samples stay cheap)."""
    sql = f"""
        WITH s AS (SELECT score, coalesce(flagged, false) AS flagged FROM screenings
                   WHERE {_GROUP_WHERE} AND score IS NOT NULL),
        r AS (SELECT min(score) AS lo, max(score) AS hi FROM s),
        w AS (SELECT lo, CASE WHEN hi > lo THEN (hi - lo) / $7 ELSE 1.0 END AS width FROM r)
        SELECT w.lo + b * w.width AS bin_start, w.lo + (b + 1) * w.width AS bin_end, flagged, count(*) AS n
        FROM (SELECT least(floor((s.score - w.lo) / w.width), $7 - 1)::INTEGER AS b, s.flagged
              FROM s, w) AS x, w
        GROUP BY ALL ORDER BY bin_start, flagged
    """
    return _df(con, sql, [run_id, *group, bins])


def screening_ranked(
    con: Con,
    run_id: str,
    group: Group,
    flagged_only: bool = True,
    verdict: str = "all",
    limit: int | None = 100,
) -> pd.DataFrame:
    """Samples of one screening ranked by score (rank 1 = highest over the whole group), with the latest
    review verdict; `verdict` is all | unreviewed | confirmed | false_positive."""
    where = ["($7 = false OR flagged)"]
    if verdict == "unreviewed":
        where.append("verdict IS NULL")
    elif verdict != "all":
        where.append("verdict = $8")
    sql = f"""
        WITH ranked AS (
            SELECT row_number() OVER (ORDER BY score DESC NULLS LAST, sample_id) AS rank, sample_id,
                   dataset_id, score, percentile, proj_train, proj_base, flagged, reason
            FROM screenings WHERE {_GROUP_WHERE}
        ), latest AS (
            SELECT sample_id, arg_max(verdict, "at") AS verdict, count(*) AS n_reviews
            FROM reviews GROUP BY sample_id
        )
        SELECT ranked.*, latest.verdict, coalesce(latest.n_reviews, 0) AS n_reviews
        FROM ranked LEFT JOIN latest USING (sample_id)
        WHERE {" AND ".join(where)}
        ORDER BY rank
        {f"LIMIT {int(limit)}" if limit else ""}
    """
    params: list[Any] = [run_id, *group, flagged_only]
    if verdict not in ("all", "unreviewed"):
        params.append(verdict)
    return _df(con, sql, params)


def sample_detail(con: Con, sample_id: str) -> dict[str, Any] | None:
    """A training sample: dataset_id, source, line and its messages (parsed)."""
    row = con.execute(
        "SELECT sample_id, dataset_id, source, line, messages FROM samples WHERE sample_id = ? "
        "ORDER BY messages IS NULL, run_id LIMIT 1",
        [sample_id],
    ).fetchone()
    if row is None:
        return None
    messages = _json(row[4])
    return {
        "sample_id": row[0],
        "dataset_id": row[1],
        "source": row[2],
        "line": row[3],
        "messages": messages if isinstance(messages, list) else [],
    }


def base_answers(con: Con, sample_id: str) -> pd.DataFrame:
    """The base model's own answers to a sample's prompt: generations with split dataset_base that
    belong to the sample, or that a screening of it compared with (`base_generation_id`: samples that
    share a prompt share one base answer)."""
    sql = """
        SELECT model_id, answer, n_tokens, finish_reason, run_id, generation_id FROM generations
        WHERE split = 'dataset_base' AND (
            sample_id = $1
            OR generation_id IN (SELECT base_generation_id FROM screenings WHERE sample_id = $1)
        )
        ORDER BY run_id, sample_index, generation_id
    """
    return _df(con, sql, [sample_id])


def sample_screenings(con: Con, sample_id: str) -> pd.DataFrame:
    """Every screening score of a sample (all runs, layers, methods)."""
    sql = """
        SELECT run_id, trait, layer, method, score, percentile, proj_train, proj_base, flagged, reason,
               vector_id
        FROM screenings WHERE sample_id = ? ORDER BY run_id, trait, layer, method
    """
    return _df(con, sql, [sample_id])


def sample_reviews(con: Con, sample_id: str) -> pd.DataFrame:
    """The review history of a sample, newest first."""
    return _df(
        con,
        'SELECT "at", verdict, reviewer, note, run_id FROM reviews WHERE sample_id = ? ORDER BY "at" DESC',
        [sample_id],
    )


def selection_records(con: Con, run_id: str, group: Group, sample_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The selected samples with their scores and messages, in rank order, for a JSONL export."""
    sql = f"""
        WITH ranked AS (
            SELECT row_number() OVER (ORDER BY score DESC NULLS LAST, sample_id) AS rank, *
            FROM screenings WHERE {_GROUP_WHERE}
        )
        SELECT r.rank, r.sample_id, r.dataset_id, r.trait, r.layer, r.method, r.score, r.percentile,
               r.proj_train, r.proj_base, r.flagged, r.reason, s.messages
        FROM ranked AS r
        LEFT JOIN (
            SELECT DISTINCT ON (sample_id) sample_id, messages FROM samples WHERE messages IS NOT NULL
        ) AS s USING (sample_id)
        WHERE r.sample_id IN (SELECT unnest($7::VARCHAR[]))
        ORDER BY r.rank
    """
    cur = con.execute(sql, [run_id, *group, list(sample_ids)])
    cols = [d[0] for d in cur.description or []]
    out = []
    for row in cur.fetchall():
        record = dict(zip(cols, row, strict=True))
        record["messages"] = _json(record["messages"])
        out.append(record)
    return out


def to_jsonl(records: Sequence[dict[str, Any]]) -> str:
    """One JSON object per line (numbers as numbers, NaN as null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        return v.item() if hasattr(v, "item") else v

    return "".join(
        json.dumps({k: clean(v) for k, v in r.items()}, ensure_ascii=False, default=str) + "\n"
        for r in records
    )


# -- training --------------------------------------------------------------------------------------


def steering_of_config(config: Any) -> dict[str, Any] | None:
    """The steering a train run used, from its config: a `steering` key at the top or one level down
    (e.g. `config.steering`). None, false, {} or coef 0 mean unsteered; anything else is steered."""
    if not isinstance(config, dict):
        return None
    candidates = [config.get("steering")] + [
        v.get("steering") for v in config.values() if isinstance(v, dict) and "steering" in v
    ]
    for value in candidates:
        if isinstance(value, dict) and value:
            coef = value.get("coef")
            if isinstance(coef, int | float) and not isinstance(coef, bool) and coef == 0:
                continue
            return value
        if value is True:
            return {"mode": "on"}
    return None


def train_runs(con: Con) -> pd.DataFrame:
    """Runs with training metrics (newest first): steered or not (from the config), the steering, steps,
    and the experiment run that made it (its datasets' finetunes; None for a run of its own)."""
    sql = f"""
        SELECT t.run_id, any_value(r.model_id) AS model_id, any_value(r.finished_at) AS finished_at,
               any_value(r.config) AS config, count(*) FILTER (WHERE {_split(con)} = 'train') AS n_steps,
               max(t.step) AS last_step,
               any_value(t.trait) AS trait, any_value(t.vector_id) AS vector_id,
               (SELECT min(e.run_id) FROM runs AS e
                WHERE e.kind = 'experiment' AND list_contains(e.parent_run_ids, t.run_id)) AS experiment
        FROM train_metrics AS t LEFT JOIN runs AS r USING (run_id)
        GROUP BY t.run_id
        ORDER BY finished_at DESC NULLS LAST, t.run_id
    """
    df = _df(con, sql)
    steering = [steering_of_config(_json(c)) for c in df["config"]]
    df["steered"] = [s is not None for s in steering]
    df["steering"] = [json.dumps(s, sort_keys=True) if s is not None else "" for s in steering]
    return df.drop(columns=["config"])


def _split(con: Con) -> str:
    """train_metrics.split (train | eval) where the table has it, else every row counts as train."""
    return "coalesce(split, 'train')" if has_column(con, "train_metrics", "split") else "'train'"


def train_curves(con: Con, run_ids: Sequence[str]) -> pd.DataFrame:
    """run_id, split, step, epoch, loss, learning_rate, grad_norm, projection for the given runs."""
    sql = f"""
        SELECT run_id, {_split(con)} AS split, step, epoch, loss, learning_rate, grad_norm, projection, layer
        FROM train_metrics WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, split, step
    """
    return _df(con, sql, [list(run_ids)])


def train_summary(con: Con, run_ids: Sequence[str]) -> pd.DataFrame:
    """Per run, over its train steps: steps, final and lowest loss, final and mean projection (nulls
    left out); the last eval loss where the run evaluated; the monitored layer and the finetuning shift
    there (finetune_shifts), where the run recorded one."""
    sql = f"""
        WITH t AS (
            SELECT *, {_split(con)} AS split_ FROM train_metrics
            WHERE run_id IN (SELECT unnest(?::VARCHAR[]))
        ), a AS (
            SELECT run_id, count(*) FILTER (WHERE split_ = 'train') AS n_steps,
                   max(step) FILTER (WHERE split_ = 'train') AS last_step,
                   arg_max(loss, step) FILTER (WHERE split_ = 'train' AND loss IS NOT NULL) AS final_loss,
                   min(loss) FILTER (WHERE split_ = 'train') AS min_loss,
                   arg_max(projection, step) FILTER (WHERE split_ = 'train' AND projection IS NOT NULL)
                       AS final_projection,
                   avg(projection) FILTER (WHERE split_ = 'train') AS mean_projection,
                   count(*) FILTER (WHERE split_ = 'eval') AS n_evals,
                   arg_max(loss, step) FILTER (WHERE split_ = 'eval' AND loss IS NOT NULL)
                       AS final_eval_loss,
                   max(layer) AS monitor_layer
            FROM t GROUP BY run_id
        )
        SELECT a.*, s.shift AS shift_at_layer
        FROM a LEFT JOIN finetune_shifts AS s ON s.run_id = a.run_id AND s.layer = a.monitor_layer
        ORDER BY a.run_id
    """
    return _df(con, sql, [list(run_ids)])


def finetune_shifts(con: Con, run_ids: Sequence[str]) -> pd.DataFrame:
    """The finetuning shift of the given train runs, one row per run and layer of the monitored vector:
    base_proj and finetuned_proj (mean prompt_last projections over the trait's eval prompts) and
    shift = finetuned_proj - base_proj."""
    sql = """
        SELECT run_id, trait, vector_id, layer, base_proj, finetuned_proj, shift, n_prompts, model_id,
               adapter
        FROM finetune_shifts WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, layer
    """
    return _df(con, sql, [list(run_ids)])

"""Queries of the Runs page: the warehouse's state and counts, runs, one run's detail and lineage."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from pvdata.dashboard.queries.sql import Con, _df, _json

WarehouseState = Literal["missing", "empty", "ok"]


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

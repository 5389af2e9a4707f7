"""Readers: an in-memory DuckDB connection with one view per table, plus Arrow, Polars and HF exports.

A connection is in-memory and its views read the Parquet files directly, so a reader never holds a lock
that could block a writer or another reader. Files are validated (stamps, columns, types) before any view
is made, so a foreign or corrupt file is an error that names it. For each table there are two views:
`<table>_all` (every committed row) and `<table>` (rows of succeeded runs; with include_running also of
runs still running, never of failed ones). `runs` shows the latest event of every run, whatever its status.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pvdata.errors import MissingExtraError, WarehouseError
from pvdata.warehouse import files
from pvdata.warehouse.schema import TABLES, FileInfo, TableSpec

CATALOG_NAME = "pv.duckdb"

_SQL_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us"): "TIMESTAMP",
    pa.list_(pa.string()): "VARCHAR[]",
    pa.list_(pa.float32()): "FLOAT[]",
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def vector_width(infos: list[FileInfo], column: str) -> int | None:
    """H when every file agrees on the width of a vector column, else None (the view uses FLOAT[])."""
    widths = {i.dims.get(column) for i in infos if i.num_rows}
    if len(widths) == 1:
        (h,) = widths
        return h if isinstance(h, int) and h > 0 else None
    return None


def _column_exprs(spec: TableSpec, infos: list[FileInfo]) -> list[str]:
    out = []
    for f in spec.schema:
        q = quote_ident(f.name)
        if f.name in spec.vector_columns:
            h = vector_width(infos, f.name)
            out.append(f"CAST({q} AS FLOAT[{h if h else ''}]) AS {q}")
        else:
            out.append(q)
    return out


def raw_view_sql(root: Path, spec: TableSpec, infos: list[FileInfo]) -> str:
    """SELECT over a table's files; an empty table gets a typed zero-row SELECT with the same columns."""
    if not infos:
        cols = []
        for f in spec.schema:
            sql_type = _SQL_TYPES[f.type]
            cols.append(f"CAST(NULL AS {sql_type}) AS {quote_ident(f.name)}")
        return f"SELECT {', '.join(cols)} WHERE false"
    source = (
        f"read_parquet({quote_literal(files.table_glob(root, spec.name))}, "
        "hive_partitioning = true, hive_types = {'run_id': VARCHAR})"
    )
    return f"SELECT {', '.join(_column_exprs(spec, infos))} FROM {source}"


def _statuses(include_running: bool) -> str:
    return "('succeeded', 'running')" if include_running else "('succeeded')"


def create_views(
    con: duckdb.DuckDBPyConnection, root: Path, *, include_running: bool = False, validate: bool = True
) -> dict[str, list[FileInfo]]:
    """Create `<table>_all`, `<table>` views (and `runs`) on a connection; returns the files per table."""
    infos = {t: files.table_files(root, t) if validate else [] for t in TABLES}
    for name, spec in TABLES.items():
        con.execute(f"CREATE OR REPLACE VIEW {name}_all AS {raw_view_sql(root, spec, infos[name])}")
    con.execute(
        "CREATE OR REPLACE VIEW runs AS SELECT * FROM runs_all "
        "QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY seq DESC) = 1"
    )
    for name in TABLES:
        if name == "runs":
            continue
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {name}_all WHERE run_id IN "
            f"(SELECT run_id FROM runs WHERE status IN {_statuses(include_running)})"
        )
    return infos


def connect(root: str | os.PathLike[str], include_running: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table (succeeded runs only unless include_running).

    Views read the files live: rows committed after connect() show up in later queries. A table that
    was empty at connect() stays empty in this connection; connect again to see it.
    """
    path = files.resolve_root(root)
    if not path.is_dir():
        raise WarehouseError(
            f"warehouse {path} does not exist; pass --warehouse DIR or set PVDATA_WAREHOUSE to an existing "
            "one"
        )
    con = duckdb.connect(":memory:")
    try:
        create_views(con, path, include_running=include_running)
    except BaseException:
        con.close()
        raise
    return con


def refresh_catalog(root: str | os.PathLike[str]) -> Path:
    """Rewrite ROOT/pv.duckdb (views only, for the DuckDB CLI) via a temp file and a rename.

    The rename never waits on a lock: a DuckDB CLI that has the old catalog open keeps reading it. The
    file uses DuckDB's v1.0 storage format when this duckdb can write it, so older DuckDB CLIs open it.
    """
    path = files.resolve_root(root)
    target = path / CATALOG_NAME
    tmp = path / f".{CATALOG_NAME}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        con = duckdb.connect(":memory:")
        try:
            try:
                con.execute(f"ATTACH {quote_literal(str(tmp))} AS pv (STORAGE_VERSION 'v1.0.0')")
            except duckdb.Error:
                tmp.unlink(missing_ok=True)
                con.execute(f"ATTACH {quote_literal(str(tmp))} AS pv")
            con.execute("USE pv")
            create_views(con, path, include_running=False)
            con.execute("CHECKPOINT pv")
            con.execute("USE memory")
            con.execute("DETACH pv")
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    return target


def _relation(con: duckdb.DuckDBPyConnection, table_or_query: str) -> duckdb.DuckDBPyRelation:
    text = table_or_query.strip()
    if text in TABLES or (text.endswith("_all") and text[:-4] in TABLES):
        return con.sql(f"SELECT * FROM {text}")
    return con.sql(text)


def arrow_table(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's result as one Arrow table (works across DuckDB 1.x and 2.x)."""
    to_table = getattr(rel, "to_arrow_table", None)
    if to_table is not None:
        return to_table()
    result = rel.arrow()
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def to_arrow(root: str | os.PathLike[str], table_or_query: str, include_running: bool = False) -> pa.Table:
    """A table name (or `<table>_all`) or a SQL query over the views, as a pyarrow Table."""
    con = connect(root, include_running=include_running)
    try:
        return arrow_table(_relation(con, table_or_query))
    finally:
        con.close()


def to_polars(root: str | os.PathLike[str], table_or_query: str, include_running: bool = False) -> Any:
    """As to_arrow, as a polars DataFrame (FLOAT[H] columns become Array(Float32, H))."""
    import polars as pl

    return pl.from_arrow(to_arrow(root, table_or_query, include_running=include_running))


def to_hf_dataset(root: str | os.PathLike[str], table_or_query: str, include_running: bool = False) -> Any:
    """As to_arrow, as a Hugging Face `datasets.Dataset` (needs the 'datasets' extra)."""
    try:
        import datasets
    except ModuleNotFoundError:
        raise MissingExtraError("datasets", "datasets") from None
    table = to_arrow(root, table_or_query, include_running=include_running)
    return datasets.Dataset(_plain_lists(table))


def _plain_lists(table: pa.Table) -> pa.Table:
    """HF datasets reads variable lists best: turn fixed-size lists back into lists."""
    cols = []
    for col in table.columns:
        if pa.types.is_fixed_size_list(col.type):
            col = col.cast(pa.list_(col.type.value_type))
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


class QueryError(WarehouseError):
    """A SQL query DuckDB could not run; the message is DuckDB's, plus the views one can query."""


def execute(
    con: duckdb.DuckDBPyConnection, query: str, *, max_rows: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """Run a query: (column names, rows, truncated). DuckDB errors become QueryError."""
    if not query.strip():
        raise QueryError('the query is empty; give SQL such as "SELECT * FROM runs"')
    try:
        cur = con.execute(query)
        if cur.description is None:
            return [], [], False
        columns = [d[0] for d in cur.description]
        if max_rows is None:
            return columns, cur.fetchall(), False
        rows = cur.fetchmany(max_rows + 1)
        return columns, rows[:max_rows], len(rows) > max_rows
    except duckdb.Error as exc:
        text = str(exc).strip()
        if isinstance(exc, duckdb.CatalogException):
            views = ", ".join([*sorted(n for n in TABLES), "<table>_all"])
            text += f"\nviews: {views}"
        raise QueryError(f"query failed: {text}") from None

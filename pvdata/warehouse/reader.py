"""Readers: an in-memory DuckDB connection with one view per table, plus Arrow, Polars and HF exports.

A connection is in-memory and its views read the Parquet files directly, so a reader never holds a lock
that could block a writer or another reader. Files are validated (stamps, columns, types) before any view
is made, so a foreign or corrupt file is an error that names it. For each table there are two views:
`<table>_all` (every committed row) and `<table>` (rows of succeeded runs; with include_running also of
runs still running, never of failed ones). `runs` shows the latest event of every run, whatever its status.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pvdata.errors import MissingExtraError, WarehouseError
from pvdata.warehouse.files import StoreLike, table_files, table_glob
from pvdata.warehouse.schema import TABLES, FileInfo, TableSpec
from pvdata.warehouse.store import open_store

CATALOG_NAME = "pv.duckdb"

log = logging.getLogger("pvdata.warehouse")

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


def _absent_columns(infos: list[FileInfo]) -> set[str]:
    """Added columns that no file has (all were written before them): the view selects typed NULLs."""
    return set.intersection(*(set(i.lacks) for i in infos)) if infos else set()


def _needs_union(infos: list[FileInfo]) -> bool:
    """Whether some files lack an added column that others have: read_parquet must union by name."""
    absent = _absent_columns(infos)
    return any(set(i.lacks) - absent for i in infos)


def _column_exprs(spec: TableSpec, infos: list[FileInfo]) -> list[str]:
    out = []
    absent = _absent_columns(infos)
    for f in spec.schema:
        q = quote_ident(f.name)
        if f.name in absent:
            out.append(f"CAST(NULL AS {_SQL_TYPES[f.type]}) AS {q}")
        elif f.name in spec.vector_columns:
            h = vector_width(infos, f.name)
            out.append(f"CAST({q} AS FLOAT[{h if h else ''}]) AS {q}")
        else:
            out.append(q)
    return out


def raw_view_sql(root: StoreLike, spec: TableSpec, infos: list[FileInfo], source: str | None = None) -> str:
    """SELECT over a table's files; an empty table gets a typed zero-row SELECT with the same columns.

    The columns are the table's, in its order, whichever pvdata wrote the files: an added column that
    some files lack is read with union_by_name (NULL for their rows), one that every file lacks is a
    typed NULL. `source` replaces the default `read_parquet` of the table's local glob (a registered
    Arrow dataset for a warehouse on a filesystem URI, or an s3:// glob in the DuckDB CLI script)."""
    if not infos:
        cols = []
        for f in spec.schema:
            sql_type = _SQL_TYPES[f.type]
            cols.append(f"CAST(NULL AS {sql_type}) AS {quote_ident(f.name)}")
        return f"SELECT {', '.join(cols)} WHERE false"
    if source is None:
        source = read_parquet_sql(table_glob(root, spec.name), union_by_name=_needs_union(infos))
    return f"SELECT {', '.join(_column_exprs(spec, infos))} FROM {source}"


def read_parquet_sql(glob: str, *, union_by_name: bool = False) -> str:
    """read_parquet over a glob; union_by_name when files differ in columns (it reads every footer)."""
    options = "hive_partitioning = true, hive_types = {'run_id': VARCHAR}"
    if union_by_name:
        options += ", union_by_name = true"
    return f"read_parquet({quote_literal(glob)}, {options})"


def _statuses(include_running: bool) -> str:
    return "('succeeded', 'running')" if include_running else "('succeeded')"


def view_statements(
    root: StoreLike,
    infos: dict[str, list[FileInfo]],
    *,
    include_running: bool = False,
    sources: dict[str, str] | None = None,
) -> list[str]:
    """The CREATE VIEW statements of `<table>_all`, `runs` and `<table>` (see the module doc)."""
    out = []
    for name, spec in TABLES.items():
        source = (sources or {}).get(name)
        out.append(f"CREATE OR REPLACE VIEW {name}_all AS {raw_view_sql(root, spec, infos[name], source)}")
    out.append(
        "CREATE OR REPLACE VIEW runs AS SELECT * FROM runs_all "
        "QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY seq DESC) = 1"
    )
    for name in TABLES:
        if name == "runs":
            continue
        out.append(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {name}_all WHERE run_id IN "
            f"(SELECT run_id FROM runs WHERE status IN {_statuses(include_running)})"
        )
    return out


def create_views(
    con: duckdb.DuckDBPyConnection,
    root: StoreLike,
    *,
    include_running: bool = False,
    validate: bool = True,
) -> dict[str, list[FileInfo]]:
    """Create `<table>_all`, `<table>` views (and `runs`) on a connection; returns the files per table.

    A local warehouse's views read its files with read_parquet, live. A warehouse on a filesystem URI
    gets one registered pyarrow dataset per table over the files validated now (DuckDB needs no httpfs):
    files committed later show up on the next connect()."""
    store = open_store(root)
    infos = {t: table_files(store, t) if validate else [] for t in TABLES}
    sources: dict[str, str] = {}
    if not store.is_local:
        import pyarrow.dataset as ds

        for name, spec in TABLES.items():
            if infos[name]:  # schema=spec.schema: pyarrow reads an added column a file lacks as null
                dataset = ds.dataset(
                    [i.path for i in infos[name]], schema=spec.schema, format="parquet", filesystem=store.fs
                )
                sources[name] = f"_pv_files_{name}"
                con.register(sources[name], dataset)
    for sql in view_statements(store, infos, include_running=include_running, sources=sources):
        con.execute(sql)
    return infos


def connect(root: StoreLike, include_running: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table (succeeded runs only unless include_running).

    `root` is a local folder or a filesystem URI (s3://bucket/prefix, ...). Views of a local warehouse
    read the files live: rows committed after connect() show up in later queries (a table that was empty
    at connect() stays empty in this connection, and an added column that no file had then stays NULL).
    A remote warehouse's views see the files that existed at connect(). Connect again to see newer ones.
    """
    store = open_store(root)
    if not store.exists():
        raise WarehouseError(
            f"warehouse {store.uri} does not exist; pass --warehouse DIR or URI, or set PVDATA_WAREHOUSE "
            "to an existing one"
        )
    con = duckdb.connect(":memory:")
    try:
        create_views(con, store, include_running=include_running)
    except BaseException:
        con.close()
        raise
    return con


def refresh_catalog(root: StoreLike) -> Path | str | None:
    """Rewrite ROOT/pv.duckdb (views only, for the DuckDB CLI) via a temp file and a rename.

    The rename never waits on a lock: a DuckDB CLI that has the old catalog open keeps reading it. The
    file uses DuckDB's v1.0 storage format when this duckdb can write it, so older DuckDB CLIs open it.
    A warehouse on s3:// or gs:// gets ROOT/pv.sql instead (a script of httpfs views, see
    duckdb_cli_script); other filesystems get nothing (None), as the DuckDB CLI cannot read them.
    """
    store = open_store(root)
    if store.local is None:
        if store.scheme not in _CLI_SCHEMES:
            log.info("no DuckDB CLI catalog for %s: DuckDB cannot read %s://", store.uri, store.scheme)
            return None
        script = store.path(CLI_SCRIPT_NAME)
        store.write_bytes(script, duckdb_cli_script(store).encode())
        return store.display(script)
    path = store.local
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
            create_views(con, store, include_running=False)
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


CLI_SCRIPT_NAME = "pv.sql"
_CLI_SCHEMES = ("s3", "gs", "gcs")


def duckdb_cli_script(root: StoreLike) -> str:
    """SQL for the DuckDB CLI: load httpfs, then the same views as connect() over s3:// (or gs://) globs.

    It holds no credentials: create a DuckDB secret first (the comment at its top shows the statement with
    this warehouse's region and endpoint), then `duckdb -init pv.sql`."""
    import urllib.parse

    store = open_store(root)
    if store.local is not None or store.scheme not in _CLI_SCHEMES:
        raise WarehouseError(
            f"warehouse {store.uri}: the DuckDB CLI reads local folders (use pv.duckdb) and s3:// or gs:// "
            "URIs through httpfs; it cannot read this one"
        )
    infos = {t: table_files(store, t) for t in TABLES}
    url = "gs" if store.scheme in ("gs", "gcs") else "s3"
    prefix = f"{url}://{store.base.strip('/')}"
    query = dict(urllib.parse.parse_qsl(store.uri.partition("?")[2]))
    if url == "s3":
        opts = ["TYPE s3", "KEY_ID '<AWS_ACCESS_KEY_ID>'", "SECRET '<AWS_SECRET_ACCESS_KEY>'"]
        opts.append(f"REGION '{query.get('region') or os.environ.get('AWS_REGION') or 'us-east-1'}'")
        if query.get("endpoint_override"):
            opts += [f"ENDPOINT '{query['endpoint_override']}'", "URL_STYLE 'path'"]
        if query.get("scheme") == "http":
            opts.append("USE_SSL false")
    else:
        opts = ["TYPE gcs", "KEY_ID '<HMAC_KEY_ID>'", "SECRET '<HMAC_SECRET>'"]
    sources = {
        t: read_parquet_sql(f"{prefix}/tables/{t}/*/*.parquet", union_by_name=_needs_union(infos[t]))
        for t in TABLES
    }
    lines = [
        f"-- DuckDB CLI views over the pvdata warehouse {store.uri}, written by pvdata.",
        "-- No credentials are stored here. Create a DuckDB secret once, e.g.:",
        f"--   CREATE PERSISTENT SECRET pvdata ({', '.join(opts)});",
        "-- then: duckdb -init pv.sql   (files committed later show up in the next query)",
        "INSTALL httpfs;",
        "LOAD httpfs;",
    ]
    lines += [s + ";" for s in view_statements(store, infos, sources=sources)]
    return "\n".join(lines) + "\n"


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


def to_arrow(root: StoreLike, table_or_query: str, include_running: bool = False) -> pa.Table:
    """A table name (or `<table>_all`) or a SQL query over the views, as a pyarrow Table."""
    con = connect(root, include_running=include_running)
    try:
        return arrow_table(_relation(con, table_or_query))
    finally:
        con.close()


def to_polars(root: StoreLike, table_or_query: str, include_running: bool = False) -> Any:
    """As to_arrow, as a polars DataFrame (FLOAT[H] columns become Array(Float32, H))."""
    import polars as pl

    return pl.from_arrow(to_arrow(root, table_or_query, include_running=include_running))


def to_hf_dataset(root: StoreLike, table_or_query: str, include_running: bool = False) -> Any:
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
    _check_query(query)
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
        raise _query_error(exc) from None


def execute_arrow(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table | None:
    """Run a query: its whole result as an Arrow table with DuckDB's types (None for a statement
    without a result), e.g. for a Parquet file. DuckDB errors become QueryError."""
    _check_query(query)
    try:
        rel = con.sql(query)
        return None if rel is None else arrow_table(rel)
    except duckdb.Error as exc:
        raise _query_error(exc) from None


def _check_query(query: str) -> None:
    if not query.strip():
        raise QueryError('the query is empty; give SQL such as "SELECT * FROM runs"')


def _query_error(exc: duckdb.Error) -> QueryError:
    text = str(exc).strip()
    if isinstance(exc, duckdb.CatalogException):
        views = ", ".join([*sorted(n for n in TABLES), "<table>_all"])
        text += f"\nviews: {views}"
    return QueryError(f"query failed: {text}")

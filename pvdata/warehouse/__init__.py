"""The warehouse: Parquet tables with lineage, atomic resumable writes, and DuckDB views over them.

A pipeline step opens a run, skips what it already committed, and writes through the run's writers:

    >>> wh = Warehouse("warehouse")
    >>> with wh.run("judge", config, parent_run_ids=[generate_run_id]) as run:
    ...     if run.skipped:  # it already succeeded
    ...         print(run.message)
    ...     else:
    ...         done = run.done_ids("judgments", "judgment_id")
    ...         writer = run.writer("judgments")
    ...         writer.write({"judgment_id": ..., "generation_id": ..., "metric": "evil", "score": 87.5})
    >>> con = connect("warehouse")  # in-memory DuckDB, a view per table

The root is a local folder or a filesystem URI (s3://bucket/prefix, gs://..., memory://...): see store.py.

See docs/WAREHOUSE.md.
"""

from pvdata.warehouse.files import resolve_root, run_dir, table_files
from pvdata.warehouse.ids import canonical_json, config_hash, item_id
from pvdata.warehouse.queries import describe_query, load_query, query_names
from pvdata.warehouse.reader import (
    CATALOG_NAME,
    CLI_SCRIPT_NAME,
    arrow_table,
    connect,
    duckdb_cli_script,
    refresh_catalog,
    to_arrow,
    to_hf_dataset,
    to_polars,
    vector_width,
)
from pvdata.warehouse.redact import REDACTED, is_secret_key, redact, redact_text
from pvdata.warehouse.runs import Run, Warehouse, run_is_alive, utcnow
from pvdata.warehouse.schema import (
    RUN_KINDS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    TABLES,
    FileInfo,
    TableSpec,
    check_schema,
    get_spec,
    validate_file,
)
from pvdata.warehouse.store import Store, open_store
from pvdata.warehouse.writer import Commit, TableWriter

__all__ = [
    "CATALOG_NAME",
    "CLI_SCRIPT_NAME",
    "REDACTED",
    "RUN_KINDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TABLES",
    "Commit",
    "FileInfo",
    "Run",
    "Store",
    "TableSpec",
    "TableWriter",
    "Warehouse",
    "arrow_table",
    "canonical_json",
    "check_schema",
    "config_hash",
    "connect",
    "describe_query",
    "duckdb_cli_script",
    "get_spec",
    "is_secret_key",
    "item_id",
    "load_query",
    "open_store",
    "query_names",
    "redact",
    "redact_text",
    "refresh_catalog",
    "resolve_root",
    "run_dir",
    "run_is_alive",
    "table_files",
    "to_arrow",
    "to_hf_dataset",
    "to_polars",
    "utcnow",
    "validate_file",
    "vector_width",
]

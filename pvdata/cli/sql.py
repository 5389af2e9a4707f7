"""`pvdata sql QUERY`: SQL over the warehouse views, printed as a table, CSV or JSON, or written to a file
(--output), also as Parquet with DuckDB's column types."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pvdata.cli.options import add_warehouse_option, warehouse_root
from pvdata.errors import ConfigError

FORMATS = ("table", "csv", "json", "parquet")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sql",
        help="run SQL over the warehouse views (runs, generations, judgments, ...)",
        description="Run SQL over the warehouse. Each table has a view with the rows of succeeded runs "
        "and a <table>_all view with every committed row; `runs` shows the latest status of every run.",
    )
    parser.add_argument("query", nargs="?", help="SQL text; '-' reads it from stdin")
    parser.add_argument("--file", "-f", help="read the SQL from this file")
    parser.add_argument(
        "--query-name",
        "-q",
        help="run a standard query from warehouse/queries (projection_vs_score, steering_sweep, ...)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="output format (parquet needs --output; default: table)",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        default=None,
        help="write the result to FILE instead of printing it (written whole or not at all)",
    )
    parser.add_argument(
        "--include-running",
        action="store_true",
        help="also show rows of runs still running (progress, partial results); failed runs stay hidden",
    )
    parser.add_argument(
        "--max-rows", type=int, default=1000, help="rows printed in table format (csv and json print all)"
    )
    parser.add_argument("--max-width", type=int, default=60, help="widest cell in table format")
    add_warehouse_option(parser)
    parser.set_defaults(func=run)


def read_query(args: argparse.Namespace) -> str:
    given = [x for x in (args.query, args.file, args.query_name) if x]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of QUERY, --file F or --query-name NAME "
            f'(got {len(given)}); e.g. pvdata sql "SELECT kind, status FROM runs"'
        )
    if args.query_name:
        from pvdata.warehouse.queries import load_query

        return load_query(args.query_name)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ConfigError(f"--file {args.file}: no such file")
        return path.read_text(encoding="utf-8")
    if args.query == "-":
        return sys.stdin.read()
    return str(args.query)


def check_output(fmt: str, output: str | None) -> Path | None:
    """--output FILE: a file name in an existing folder; parquet is binary and is never printed."""
    if output is None:
        if fmt == "parquet":
            raise ConfigError(
                "--format parquet writes a file: add --output FILE.parquet (or use --format csv or json "
                "to print the result)"
            )
        return None
    path = Path(output).expanduser()
    if path.is_dir():
        raise ConfigError(f"--output {output} is a folder: give a file name, e.g. {path / 'result.parquet'}")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {path.parent} does not exist")
    return path


def _write_atomic(path: Path, write: Any) -> None:
    """write(tmp_path) beside `path`, then rename: a failed write leaves no partial file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp_name)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    output = check_output(args.format, args.output)
    query = read_query(args)
    from pvdata.warehouse.display import render
    from pvdata.warehouse.reader import connect, execute, execute_arrow

    con = connect(warehouse_root(args.warehouse), include_running=args.include_running)
    table = None
    columns: list[str] = []
    rows: list[tuple[Any, ...]] = []
    truncated = False
    try:
        if args.format == "parquet":
            table = execute_arrow(con, query)
        else:
            max_rows = args.max_rows if args.format == "table" and output is None else None
            columns, rows, truncated = execute(con, query, max_rows=max_rows)
    finally:
        con.close()
    if output is not None and args.format == "parquet":  # check_output: parquet always has --output
        if table is None:
            raise ConfigError("the query returns no result to write: give a SELECT for --format parquet")
        import pyarrow.parquet as pq

        _write_atomic(output, lambda tmp: pq.write_table(table, tmp))
        print(f"wrote {table.num_rows} row(s), {table.num_columns} column(s) to {output}", file=sys.stderr)
        return 0
    if not columns:
        return 0
    text = render(args.format, columns, rows, max_width=args.max_width)
    if output is not None:
        _write_atomic(output, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
        print(f"wrote {len(rows)} row(s) to {output}", file=sys.stderr)
        return 0
    print(text)
    if args.format == "table":
        note = f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
        note += ", more not shown: raise --max-rows or use --format csv)" if truncated else ")"
        print(note)
    return 0

"""`pvdata sql QUERY`: SQL over the warehouse views, printed as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pvdata.cli.options import add_warehouse_option, warehouse_root
from pvdata.errors import ConfigError


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
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
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


def run(args: argparse.Namespace) -> int:
    query = read_query(args)
    from pvdata.warehouse.display import render
    from pvdata.warehouse.reader import connect, execute

    con = connect(warehouse_root(args.warehouse), include_running=args.include_running)
    try:
        max_rows = args.max_rows if args.format == "table" else None
        columns, rows, truncated = execute(con, query, max_rows=max_rows)
    finally:
        con.close()
    if not columns:
        return 0
    print(render(args.format, columns, rows, max_width=args.max_width))
    if args.format == "table":
        note = f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
        note += ", more not shown: raise --max-rows or use --format csv)" if truncated else ")"
        print(note)
    return 0

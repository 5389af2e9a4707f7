"""What every dashboard query shares: the connection type, running SQL into a DataFrame, the standard
analyses as subqueries, lenient JSON parsing, and whether a view has a column."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd

from pvdata.warehouse.queries import load_query

Con = duckdb.DuckDBPyConnection


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


def has_column(con: Con, view: str, column: str) -> bool:
    """Whether a view has a column (tables gain columns; the dashboard reads what is there)."""
    rows = con.execute(f"SELECT column_name FROM (DESCRIBE {view})").fetchall()
    return column in {r[0] for r in rows}

"""Reading a dashboard page under Streamlit's AppTest, and the warehouse under it without pvdata.

Shared by the page tests (test_dashboard_pages.py) and the query and CLI tests
(test_dashboard_queries.py); the warehouse itself comes from dashboard_fixture.py via the `dash`
fixture in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dashboard_fixture import Built

APP = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"


def run_app(root: str | Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PVDATA_WAREHOUSE", str(root))
    monkeypatch.setenv("PVDATA_REVIEWER", "tester")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    return at.run()


def metrics(at: Any) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: Any, *columns: str) -> pd.DataFrame:
    """The first dataframe on the page that has these columns."""
    for df in at.dataframe:
        if set(columns) <= set(df.value.columns):
            return df.value.reset_index(drop=True)
    raise AssertionError(
        f"no dataframe with columns {columns}: {[list(d.value.columns) for d in at.dataframe]}"
    )


def frames(at: Any, *columns: str) -> list[pd.DataFrame]:
    """Every dataframe on the page that has these columns, in page order (left column first)."""
    return [df.value.reset_index(drop=True) for df in at.dataframe if set(columns) <= set(df.value.columns)]


def chart_data(at: Any) -> list[tuple[str, list[pd.DataFrame]]]:
    """Every Vega-Lite chart on the page: its title and the data it was given (Arrow, as sent)."""
    out = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec.get("title") or ""
        title = title.get("text", "") if isinstance(title, dict) else str(title)
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets]
        out.append((title, frames))
    return out


def texts(at: Any) -> str:
    return "\n".join(
        [m.value for m in at.markdown] + [c.value for c in at.caption] + [c.value for c in at.code]
    )


def raw(root: str, table: str) -> pd.DataFrame:
    """Every committed row of a table, straight from its Parquet files (no pvdata reader)."""
    files = sorted(Path(root, "tables", table).glob("run_id=*/*.parquet"))
    if not files:
        return pd.DataFrame()
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive").to_pandas()


def latest_runs(root: str) -> pd.DataFrame:
    events = raw(root, "runs")
    return events.sort_values("seq").groupby("run_id").tail(1).set_index("run_id")


def screened(dash: Built, method: str = "exact") -> pd.DataFrame:
    """The screenings rows of the fixture's screen run for one method, in stored order."""
    s = raw(dash.root, "screenings")
    return s[(s["run_id"] == dash.screen_run) & (s["method"] == method)].reset_index(drop=True)

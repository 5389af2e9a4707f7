"""pvdata dashboard: review runs, vectors, steering sweeps, projections, screenings, training, experiments.

Start it with `pvdata dashboard [--warehouse DIR] [--port P] [--host H]`, or
`streamlit run dashboards/app.py -- --warehouse DIR`. It only reads the warehouse (an in-memory DuckDB
connection with views over the Parquet files), except for review verdicts, which it appends as runs of
kind `review`. Deep links: `?page=screening&run_id=...&sample_id=...`. This file is the entry point
(sidebar, routing, an empty or unreadable warehouse); each page is a `render(root)` in
`pvdata.dashboard.<page>_page`, their shared cached reads and widgets are in `pvdata.dashboard.ui`, and
the queries live in `pvdata.dashboard.queries` (tested without Streamlit). See docs/DASHBOARD.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import streamlit as st

from pvdata.dashboard import (
    experiments_page,
    projection_page,
    runs_page,
    screening_page,
    steering_page,
    training_page,
    vectors_page,
)
from pvdata.dashboard import queries as q
from pvdata.dashboard.common import EMPTY_HINTS, PAGE_TABLES, PAGES
from pvdata.dashboard.ui import _connection, refresh
from pvdata.errors import PvdataError


def warehouse_root(argv: Sequence[str] | None = None) -> str:
    """--warehouse after `--` on the streamlit command line, else $PVDATA_WAREHOUSE, else ./warehouse."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--warehouse", default=None)
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return str(args.warehouse or os.environ.get("PVDATA_WAREHOUSE") or "warehouse")


RENDER: dict[str, Callable[[str], None]] = {
    "runs": runs_page.render,
    "vectors": vectors_page.render,
    "steering": steering_page.render,
    "projection": projection_page.render,
    "screening": screening_page.render,
    "training": training_page.render,
    "experiments": experiments_page.render,
}


def main() -> None:
    st.set_page_config(page_title="pvdata", layout="wide")
    root = warehouse_root()
    params = st.query_params
    keys = list(PAGES)
    asked = params.get("page")
    with st.sidebar:
        st.title("pvdata")
        page = st.radio(
            "Page", keys, index=keys.index(asked) if asked in keys else 0, format_func=PAGES.get, key="page"
        )
        st.caption(f"warehouse: `{root}`")
        if st.button("Reload data", key="reload"):
            refresh()
    if asked != page:
        if asked is not None:
            params.clear()  # another page: the previous page's selection does not carry over
        params["page"] = page
    st.header(PAGES[page])

    state = q.warehouse_state(root)
    if state != "ok":
        what = "does not exist" if state == "missing" else "is empty (no runs yet)"
        st.info(f"The warehouse at `{root}` {what}. Fill it with:")
        st.code(EMPTY_HINTS["runs"], language="bash")
        if page != "runs":
            st.markdown(f"and for this page ({PAGE_TABLES[page]}):")
            st.code(EMPTY_HINTS[page], language="bash")
        return
    try:
        _connection(root)
        RENDER[page](root)
    except PvdataError as exc:  # a file the warehouse refuses (schema, stamps): say which, no traceback
        st.error(f"The warehouse at `{root}` cannot be read: {exc}")
        st.caption("Reload data after fixing it (the message names the file and what to do).")


main()

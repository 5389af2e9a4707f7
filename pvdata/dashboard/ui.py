"""The dashboard's shared Streamlit helpers: cached warehouse reads and the small widgets every page uses.

Query results are cached per warehouse and arguments, over one cached read-only connection per warehouse;
`refresh` forgets both. Used by dashboards/app.py and the page modules (`*_page.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from pvdata.dashboard import experiment_queries as xq
from pvdata.dashboard import queries as q
from pvdata.dashboard.common import EMPTY_HINTS, page_link

MAX_LINEAGE = 60  # runs drawn in one lineage graph before it keeps only direct parents and children

# pages that show one run kind in more detail than the Runs page
KIND_PAGES = {
    "evaluate": "steering",
    "monitor": "projection",
    "screen": "screening",
    "train": "training",
    "vectors": "vectors",
    "experiment": "experiments",
}


# -- data access: one cached read-only connection, cached query results --------------------------------------


@st.cache_resource(ttl=300, show_spinner=False)
def _connection(root: str) -> Any:
    from pvdata.warehouse import connect

    return connect(root)


@st.cache_data(ttl=60, show_spinner=False)
def load(root: str, name: str, *args: Any) -> Any:
    """`pvdata.dashboard.queries.<name>(cursor, *args)`, cached per warehouse and arguments."""
    fn: Callable[..., Any] = getattr(q, name, None) or getattr(xq, name)
    cur = _connection(root).cursor()  # a cursor per query: separate result streams across sessions
    try:
        return fn(cur, *args)
    finally:
        cur.close()


def refresh() -> None:
    """Forget cached results and the connection (a table empty at connect time stays empty in it)."""
    load.clear()
    _connection.clear()


# -- small UI helpers ------------------------------------------------------------------------------


def pick(
    label: str,
    options: Sequence[Any],
    param: str,
    *,
    key: str,
    format_func: Callable[[Any], str] = str,
) -> Any:
    """A selectbox whose default comes from, and whose choice goes back to, the query parameter."""
    options = list(options)
    if not options:
        return None
    wanted = st.query_params.get(param)
    index = [str(o) for o in options].index(wanted) if wanted in [str(o) for o in options] else 0
    choice = st.selectbox(label, options, index=index, key=key, format_func=format_func)
    if choice is not None and st.query_params.get(param) != str(choice):
        st.query_params[param] = str(choice)
    return choice


def empty(page: str, what: str) -> None:
    st.info(f"No {what} in this warehouse yet. This command fills it:")
    st.code(EMPTY_HINTS[page], language="bash")


def stale_marked(root: str, runs: pd.DataFrame) -> list[str]:
    """Statuses, with 'running (stale)' for a running run whose process is gone (rerun to resume)."""
    from pvdata.warehouse import run_is_alive

    return [
        "running (stale)" if status == "running" and not run_is_alive(root, run_id) else str(status)
        for run_id, status in zip(runs["run_id"], runs["status"], strict=True)
    ]


def link(page: str, text: str, **params: str | None) -> str:
    return f"[{text}]({page_link(page, **params)})"


def fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and pd.isna(x)) else format(x, spec)

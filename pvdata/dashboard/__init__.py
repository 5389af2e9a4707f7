"""The dashboard's logic, importable without Streamlit: queries (DuckDB -> pandas), charts (Altair),
review appends, and the page list. The Streamlit app itself is `dashboards/app.py`; `pvdata dashboard`
starts it. See docs/DASHBOARD.md.
"""

from pvdata.dashboard.common import EMPTY_HINTS, PAGES, app_path, page_link

__all__ = ["EMPTY_HINTS", "PAGES", "app_path", "page_link"]

"""The dashboard's logic: queries (DuckDB -> pandas), charts (Altair), review appends and the page list,
importable without Streamlit; and the Streamlit pages (`*_page.py`, sharing `ui.py`), which only the app
imports. The app's entry point is `dashboards/app.py`; `pvdata dashboard` starts it. See docs/DASHBOARD.md.
"""

from pvdata.dashboard.common import EMPTY_HINTS, PAGES, app_path, page_link

__all__ = ["EMPTY_HINTS", "PAGES", "app_path", "page_link"]

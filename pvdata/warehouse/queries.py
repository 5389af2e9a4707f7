"""The standard analyses as named SQL files (pvdata/warehouse/sql/*.sql, copied to warehouse/queries/).

The package copy is the one pvdata runs, so an installed pvdata has them too; the repo's
warehouse/queries/ holds identical copies for people browsing the repo (a test keeps them equal).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pvdata.errors import WarehouseError


def _sql_dir() -> resources.abc.Traversable:
    return resources.files("pvdata.warehouse").joinpath("sql")


def query_names() -> list[str]:
    return sorted(p.name[:-4] for p in _sql_dir().iterdir() if p.name.endswith(".sql"))


def load_query(name: str) -> str:
    """The SQL text of a named query (e.g. 'projection_vs_score'), or of a .sql file path."""
    if name.endswith(".sql") and Path(name).is_file():
        return Path(name).read_text(encoding="utf-8")
    key = name[:-4] if name.endswith(".sql") else name
    if key not in query_names():
        raise WarehouseError(f"no query named {name!r}; queries: {', '.join(query_names())}")
    return _sql_dir().joinpath(f"{key}.sql").read_text(encoding="utf-8")


def describe_query(name: str) -> str:
    """The first line of a query's leading comment block (what it computes)."""
    for line in load_query(name).splitlines():
        if line.startswith("--"):
            text = line.lstrip("-").strip()
            if text:
                return text.split(":", 1)[1].strip() if text.startswith(f"{name}:") else text
    return ""

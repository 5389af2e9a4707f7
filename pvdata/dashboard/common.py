"""Pages, deep links and the commands that fill an empty page: shared by the app, the CLI and tests."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from pvdata.errors import ConfigError

# query-parameter value -> title, in sidebar order
PAGES: dict[str, str] = {
    "runs": "Runs",
    "vectors": "Vectors",
    "steering": "Steering",
    "projection": "Projection vs trait score",
    "screening": "Screening",
    "training": "Training",
    "experiments": "Experiments",
}

# what to run when a page has no data (the warehouse tables each page reads are in brackets)
EMPTY_HINTS: dict[str, str] = {
    "runs": "pvdata extract --trait evil --model smollm2-135m --judge scripted   (or: make demo)",
    "vectors": "pvdata extract --trait evil --model smollm2-135m --judge scripted",
    "steering": "pvdata evaluate --trait evil --model smollm2-135m --layers 15 --coefs 0,2,4 "
    "--judge scripted",
    "projection": "pvdata monitor --trait evil --model smollm2-135m --judge scripted",
    "screening": "pvdata screen pvdata/data/demo_chat.jsonl --model smollm2-135m --trait evil "
    "--method exact,prompt_last_approx --top-k 10",
    "training": "pvdata train --model smollm2-135m --data pvdata/data/train_evil.jsonl --monitor evil "
    "--max-steps 20   (and with --steer evil --coef 4 for a steered run)",
    "experiments": "pvdata experiment shift-prediction --model smollm2-135m --trait evil --layer 15",
}

# the table whose rows a page needs
PAGE_TABLES: dict[str, str] = {
    "runs": "runs",
    "vectors": "vectors",
    "steering": "generations",
    "projection": "projections",
    "screening": "screenings",
    "training": "train_metrics",
    "experiments": "experiment_points",
}

VERDICTS: dict[str, str] = {"confirmed": "Confirm (trait present)", "false_positive": "False positive"}


def page_link(page: str, **params: str | None) -> str:
    """A relative deep link to a page, e.g. `?page=runs&run_id=extract-...` (None values are left out)."""
    if page not in PAGES:
        raise ConfigError(f"unknown dashboard page {page!r}; pages: {', '.join(PAGES)}")
    query = {"page": page, **{k: v for k, v in params.items() if v is not None}}
    return "?" + urlencode(query)


def app_path(repo_root: Path | None = None) -> Path:
    """dashboards/app.py of the checkout pvdata is installed from (the repo root is pvdata's parent)."""
    if repo_root is None:
        import pvdata

        repo_root = Path(pvdata.__file__).resolve().parent.parent
    path = repo_root / "dashboards" / "app.py"
    if not path.is_file():
        raise ConfigError(
            f"the dashboard app was not found at {path}: `pvdata dashboard` runs dashboards/app.py from the "
            "repository pvdata is installed from. Install pvdata in editable mode from a checkout "
            "(.venv/bin/pip install -c constraints.txt -e '.[dashboard]'), or run "
            "`streamlit run /path/to/pvdata/dashboards/app.py -- --warehouse DIR` yourself"
        )
    return path

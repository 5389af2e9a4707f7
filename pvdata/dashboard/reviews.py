"""Human review verdicts: each one is a small run of kind `review` that appends one row to `reviews`.

Nothing is updated in place: a changed mind is a newer row, and readers take the latest verdict per
sample (by `at`). The review run names the screen run it reviewed as its parent, so lineage shows who
reviewed what.
"""

from __future__ import annotations

import getpass
import os
import uuid
from dataclasses import dataclass

from pvdata.dashboard.common import VERDICTS
from pvdata.errors import ConfigError


@dataclass(frozen=True)
class Review:
    """One appended verdict: the review run and the row it wrote."""

    run_id: str
    sample_id: str
    verdict: str


def default_reviewer() -> str:
    """$PVDATA_REVIEWER, else the login name."""
    name = os.environ.get("PVDATA_REVIEWER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def append_review(
    root: str | os.PathLike[str],
    *,
    sample_id: str,
    verdict: str,
    screen_run_id: str | None = None,
    dataset_id: str | None = None,
    note: str | None = None,
    reviewer: str | None = None,
) -> Review:
    """Append one verdict (confirmed | false_positive) on a sample as a run of kind `review`."""
    from pvdata.warehouse import Warehouse, utcnow

    if verdict not in VERDICTS:
        raise ConfigError(f"verdict {verdict!r} is not valid; verdicts: {', '.join(VERDICTS)}")
    if not sample_id:
        raise ConfigError("a review needs a sample_id")
    at = utcnow()
    who = reviewer or default_reviewer()
    # every click is its own run: the nonce keeps two identical verdicts apart (both are kept)
    config = {
        "review": {
            "sample_id": sample_id,
            "dataset_id": dataset_id,
            "verdict": verdict,
            "screen_run": screen_run_id,
            "reviewer": who,
            "at": at.isoformat(),
            "nonce": uuid.uuid4().hex[:8],
        }
    }
    parents = [screen_run_id] if screen_run_id else []
    wh = Warehouse(root)
    with wh.run("review", config, parent_run_ids=parents) as run:
        run.writer("reviews").write(
            {
                "sample_id": sample_id,
                "dataset_id": dataset_id,
                "verdict": verdict,
                "note": note or None,
                "reviewer": who,
                "at": at,
            }
        )
    return Review(run.run_id, sample_id, verdict)

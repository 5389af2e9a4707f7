"""The training error (kept apart from the config so the loop imports neither pydantic nor yaml)."""

from __future__ import annotations

from pvdata.errors import PvdataError


class TrainingError(PvdataError):
    """Training cannot go on: a hook that did not attach or fire, a checkpoint of another config."""

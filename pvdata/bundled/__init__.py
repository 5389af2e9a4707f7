"""Where the files pvdata ships live, in a checkout and in an installed wheel alike.

The repository keeps traits/ and training/ at its top level (the fixed layout); pvdata/bundled/ links
to them, so a wheel built from the checkout carries their YAML files inside the package and an
installed pvdata finds them without the repository.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAITS_DIR = HERE / "traits"
TRAINING_DIR = HERE / "training"
DATA_DIR = HERE.parent / "data"


def data_path(name: str) -> str:
    """A shipped data file (pvdata/data/NAME), e.g. data_path("demo_chat.jsonl")."""
    return str(DATA_DIR / name)

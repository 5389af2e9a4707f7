"""pvdata: persona vectors on real data.

Heavy modules (torch, transformers) are imported lazily so `pvdata --help` and `pvdata sql` start fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "PersonaVector",
    "PvdataError",
    "ScreenConfig",
    "__version__",
    "capture_activations",
    "connect",
    "data_path",
    "generate",
    "load_model",
    "run_screen",
    "steer",
]

_LAZY = {
    "PersonaVector": ("pvdata.vectors", "PersonaVector"),
    "capture_activations": ("pvdata.activations", "capture_activations"),
    "load_model": ("pvdata.models", "load_model"),
    "generate": ("pvdata.generation", "generate"),
    "steer": ("pvdata.steering", "steer"),
    "PvdataError": ("pvdata.errors", "PvdataError"),
    "ScreenConfig": ("pvdata.pipelines.screen", "ScreenConfig"),
    "run_screen": ("pvdata.pipelines.screen", "run_screen"),
    "connect": ("pvdata.warehouse", "connect"),
    "data_path": ("pvdata.bundled", "data_path"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'pvdata' has no attribute {name!r}")

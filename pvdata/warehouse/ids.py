"""Deterministic ids: the same inputs always hash to the same id, which is what makes resume work.

A work item's id is a hash of its inputs and of the config that shapes its result, so a rerun of the
same command recognises what it already committed and skips it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any


def _plain(obj: Any) -> Any:
    """JSON-able view of obj: pydantic models, dataclasses, paths, numpy scalars, sets, tuples."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return repr(obj)
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((_plain(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, PurePath | os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):  # pydantic
        return _plain(obj.model_dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return _plain(obj.tolist())
    if hasattr(obj, "item"):
        return _plain(obj.item())
    raise TypeError(f"cannot hash a value of type {type(obj).__name__}: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Key-sorted, compact JSON: equal configs give equal text whatever their key order."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Any) -> str:
    """Full sha256 hex of a config's canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def item_id(*parts: Any, length: int = 16) -> str:
    """Short hex id of a work item from its inputs and shaping config (length hex chars, 64 bits default)."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:length]

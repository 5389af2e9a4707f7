"""Datasets by Hugging Face hub id (`owner/name`), through `datasets.load_dataset` and its local cache.

A name that exists on disk is a path; otherwise a name shaped `owner/name` (without a data file suffix)
is a hub id. With HF_HUB_OFFLINE=1 only the local cache is used, and an id that is not cached is one
error naming it (datasets fails at once offline, it does not retry).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, DataError, MissingExtraError
from pvdata.samples.compression import CODECS

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq", ".arrow")
# A name ending in one of these is a (missing) local file, never a hub id.
FILE_ENDINGS = DATA_SUFFIXES + tuple(s + c for s in DATA_SUFFIXES for c in CODECS)
DEFAULT_SPLIT = "train"


def is_hub_id(spec: str) -> bool:
    """True for `owner/name` that is not a local file or folder (and does not look like a file
    name, compressed or not)."""
    if Path(spec).expanduser().exists():
        return False
    return HUB_ID.match(spec) is not None and not spec.lower().endswith(FILE_ENDINGS)


def hub_rows(repo_id: str, split: str | None) -> tuple[list[str], Iterator[dict[str, Any]], str]:
    """(column names, rows, dataset_id) of one split (default train) of a hub dataset."""
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("datasets", "datasets") from None
    split = split or DEFAULT_SPLIT
    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise ConfigError(
                f"dataset {repo_id} has no split {split!r}: pass --hf-split NAME ({exc})"
            ) from None
        raise DataError(f"dataset {repo_id} cannot be loaded: {exc}") from None
    except Exception as exc:  # ConnectionError offline, DatasetNotFoundError, FileNotFoundError...
        offline = bool(datasets.config.HF_HUB_OFFLINE)
        where = "in the local Hugging Face cache (HF_HUB_OFFLINE=1)" if offline else "on the Hugging Face hub"
        raise DataError(
            f"dataset {repo_id}: no such local file or folder, and not found {where} "
            f"({type(exc).__name__}: {exc}); give a local path, or load the dataset once with network"
        ) from None
    return list(ds.column_names), iter(ds), _dataset_id(ds)


def _dataset_id(ds: Any) -> str:
    """Content hash of the cached Arrow files (what the rows are), else of the dataset's fingerprint."""
    h = hashlib.sha256()
    files = [Path(f["filename"]) for f in getattr(ds, "cache_files", []) or []]
    if not files:
        h.update(str(getattr(ds, "_fingerprint", "")).encode())
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]

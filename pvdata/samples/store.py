"""A dataset as `samples` rows: one per distinct sample, plus one per invalid record (with its reason)."""

from __future__ import annotations

import hashlib
from typing import Any

from pvdata.samples.dataset import Dataset, messages_json

RAW_LIMIT = 4000  # characters of an invalid record kept in samples.raw_record


def invalid_sample_id(dataset_id: str, line: int) -> str:
    """Invalid records have no messages to hash: their id comes from where they are."""
    return "bad-" + hashlib.sha256(f"{dataset_id}:{line}".encode()).hexdigest()[:12]


def sample_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """Rows in input order: valid samples at their first line (with n_copies and every line), then
    nothing else for their copies; each invalid record as its own row with `error` set."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in dataset.records:
        if record.sample_id is None:
            rows.append(
                {
                    "sample_id": invalid_sample_id(dataset.dataset_id, record.line),
                    "dataset_id": dataset.dataset_id,
                    "source": dataset.source,
                    "format": dataset.format,
                    "line": record.line,
                    "messages": None,
                    "n_copies": 1,
                    "lines": [record.line],
                    "error": record.error,
                    "raw_record": record.raw[:RAW_LIMIT],
                    "rejected": None,
                }
            )
            continue
        if record.sample_id in seen:
            continue
        seen.add(record.sample_id)
        sample = dataset.sample(record.sample_id)
        rows.append(
            {
                "sample_id": sample.sample_id,
                "dataset_id": dataset.dataset_id,
                "source": dataset.source,
                "format": dataset.format,
                "line": record.line,
                "messages": messages_json(sample.prompt, sample.answer),
                "n_copies": sample.n_copies,
                "lines": list(sample.lines),
                "error": None,
                "raw_record": None,
                "rejected": sample.rejected,
            }
        )
    return rows

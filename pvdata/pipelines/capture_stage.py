"""Activations into the warehouse: chunked, resumable capture of (source_id, prompt, answer) items.

Used by extraction (rollouts) and screening (training samples). All rows of one source go into one
write call, so a source is either fully committed or absent, and `done_ids` makes a rerun resume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pvdata.activations.capture import POOLINGS
from pvdata.activations.items import CaptureItem, encode_items

__all__ = ["CaptureItem", "capture_into", "encode_items"]  # the items live in pvdata.activations.items


def capture_into(
    run: Any,
    lm: Any,
    items: Sequence[CaptureItem],
    *,
    layers: Sequence[int],
    poolings: Sequence[str] = POOLINGS,
    vector_dtype: str = "float32",
    chunk: int = 256,
    token_budget: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    executor: Any = None,
    model_id: str | None = None,
    max_length: int | None = None,
    compile: str | None = None,
) -> dict[str, Any]:
    """Capture what this run has not committed yet; returns stats (captured, skipped, errors).

    The chunks run on `executor` (default: this process, on `lm`); a Ray executor runs them on its
    workers (then `lm` may be None and `model_id` names the model)."""
    from pvdata.executors import CaptureJob, LocalExecutor

    if executor is None:
        executor = LocalExecutor(lm)
    model_id = model_id or lm.model_id
    done = run.done_ids("activations", "source_id")
    todo = [item for item in items if item.source_id not in done]
    writer = run.writer("activations", vector_dtype=vector_dtype)
    errors: dict[str, str] = {}
    n_done = len(items) - len(todo)
    job = CaptureJob.of(layers, poolings, token_budget, max_length, compile)
    for part in executor.capture(job, todo, chunk=chunk):
        errors.update(part.errors)
        if part.source_ids:
            n_ok, n_l = len(part.source_ids), len(part.layers)
            sources: list[str] = []
            layer_col: list[int] = []
            pooling_col: list[str] = []
            values: list[np.ndarray] = []
            for p in part.poolings:
                sources.extend(s for s in part.source_ids for _ in range(n_l))
                layer_col.extend(list(part.layers) * n_ok)
                pooling_col.extend([p] * (n_ok * n_l))
                values.append(part.values[p].reshape(n_ok * n_l, -1))
            writer.write_columns(
                {
                    "source_id": sources,
                    "model_id": model_id,
                    "layer": layer_col,
                    "pooling": pooling_col,
                    "values": np.concatenate(values).astype(np.float32),
                }
            )
        n_done += part.n_items
        if progress:
            progress(n_done, len(items))
    writer.flush()
    return {
        "items": len(items),
        "captured": len(todo) - len(errors),
        "resumed_from": len(items) - len(todo),
        "errors": len(errors),
        "error_examples": dict(list(errors.items())[:10]),
    }

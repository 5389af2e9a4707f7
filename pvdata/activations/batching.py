"""Length-sorted batches sized by a token budget (padded tokens), so long and short samples don't mix."""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(lengths: Sequence[int], token_budget: int, max_batch: int = 512) -> list[list[int]]:
    """Indices grouped so that len(batch) * max(len in batch) <= token_budget (one sample always fits).

    Longest first: a sample that does not fit in memory fails at the first batch, not after an hour.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for idx in order:
        new_width = max(width, lengths[idx])
        if current and (new_width * (len(current) + 1) > token_budget or len(current) >= max_batch):
            batches.append(current)
            current, new_width = [], lengths[idx]
        current.append(idx)
        width = new_width
    if current:
        batches.append(current)
    return batches

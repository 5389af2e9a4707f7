"""Small, dependency-free statistics used by reports and tests."""

from __future__ import annotations

from collections.abc import Sequence


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    if not positive or not negative:
        raise ValueError("auroc needs at least one positive and one negative score")
    wins = 0.0
    for p in positive:
        for n in negative:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positive) * len(negative))

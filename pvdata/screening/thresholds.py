"""Which samples to flag: a percentile of a clean reference (paper App. K), an absolute value, or top-k.

Every decision carries its reason (trait, layer, method, score, threshold and where the threshold came
from), so a flag can be audited from the `screenings` table alone. Unscored samples (None) are never
flagged and never count towards a percentile or a rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pvdata.errors import ConfigError

ThresholdKind = Literal["percentile", "absolute", "top_k"]
DEFAULT_PERCENTILE = 95.0


@dataclass(frozen=True)
class ThresholdSpec:
    """How the threshold is set. percentile: flag scores above the P-th percentile (numpy's linear
    interpolation) of the reference scores, or of the dataset's own scores without a reference;
    absolute: flag scores above X; top_k: flag the K highest scores (ties broken by input order)."""

    kind: ThresholdKind = "percentile"
    value: float = DEFAULT_PERCENTILE

    def __post_init__(self) -> None:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"threshold value {v!r} must be a finite number")
        if self.kind == "percentile" and not 0 <= v <= 100:
            raise ConfigError(f"--percentile {v:g} must be within 0..100 (95 = the paper's choice)")
        if self.kind == "top_k" and (v < 1 or int(v) != v):
            raise ConfigError(f"--top-k {v:g} must be an integer >= 1")
        if self.kind not in ("percentile", "absolute", "top_k"):
            raise ConfigError(f"threshold kind {self.kind!r}: valid kinds are percentile, absolute, top_k")

    @classmethod
    def from_flags(
        cls, percentile: float | None = None, threshold: float | None = None, top_k: int | None = None
    ) -> ThresholdSpec:
        """One of --percentile, --threshold, --top-k (none: the 95th percentile)."""
        given = {
            k: v
            for k, v in (("--percentile", percentile), ("--threshold", threshold), ("--top-k", top_k))
            if v is not None
        }
        if len(given) > 1:
            raise ConfigError(
                f"{' and '.join(given)} were both given: pick one way to set the threshold "
                "(--percentile P of the reference, --threshold X, or --top-k K)"
            )
        if top_k is not None:
            return cls("top_k", float(top_k))
        if threshold is not None:
            return cls("absolute", float(threshold))
        return cls("percentile", DEFAULT_PERCENTILE if percentile is None else float(percentile))

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "value": self.value}

    def describe(self) -> str:
        if self.kind == "percentile":
            return f"{self.value:g}th percentile"
        if self.kind == "top_k":
            return f"top {int(self.value)}"
        return f"absolute {self.value:g}"


@dataclass(frozen=True)
class Decision:
    """One sample's outcome for one (trait, layer, method)."""

    flagged: bool | None
    threshold: float | None
    percentile: float | None
    reason: str | None


@dataclass
class Decisions:
    """Per-sample decisions in input order, plus the threshold the group used."""

    threshold: float | None
    basis: str  # where the threshold came from, in words
    decisions: list[Decision]

    @property
    def n_flagged(self) -> int:
        return sum(1 for d in self.decisions if d.flagged)


def percentile_threshold(scores: Sequence[float] | np.ndarray, percentile: float) -> float:
    """The P-th percentile with linear interpolation (numpy's default method)."""
    if not len(scores):
        raise ConfigError("a percentile threshold needs at least one scored reference sample")
    return float(np.percentile(np.asarray(scores, dtype=np.float64), percentile))


def percentile_ranks(
    values: Sequence[float] | np.ndarray, population: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Percentile rank (0..100) of each value among a population: the share below, ties counting half."""
    pop = np.sort(np.asarray(population, dtype=np.float64))
    vals = np.asarray(values, dtype=np.float64)
    if not len(pop):
        return np.full(len(vals), np.nan)
    below = np.searchsorted(pop, vals, side="left")
    upto = np.searchsorted(pop, vals, side="right")
    return np.asarray(100.0 * (below + 0.5 * (upto - below)) / len(pop))


def decide(
    scores: Sequence[float | None],
    spec: ThresholdSpec,
    *,
    reference: Sequence[float] | None = None,
    label: str = "",
    errors: Sequence[str | None] | None = None,
) -> Decisions:
    """Flag the scores of one (trait, layer, method) group.

    `reference`: the same metric on a clean dataset (percentile thresholds and percentile ranks use it;
    without it they use these scores). `label` starts every reason ("evil L15 exact"). `errors[i]` is
    why score i is None, for its reason.
    """
    values = np.array([np.nan if s is None else float(s) for s in scores], dtype=np.float64)
    ok = np.isfinite(values)
    population = np.asarray(reference, dtype=np.float64) if reference is not None else values[ok]
    population = population[np.isfinite(population)]
    where = "the reference" if reference is not None else "this dataset"
    flagged = np.zeros(len(values), dtype=bool)
    threshold: float | None
    if spec.kind == "percentile":
        threshold = percentile_threshold(population, spec.value) if len(population) else None
        basis = f"{spec.value:g}th percentile of {where}, n={len(population)}"
        if threshold is not None:
            flagged = ok & (np.where(ok, values, -np.inf) > threshold)
    elif spec.kind == "absolute":
        threshold = spec.value
        basis = "absolute threshold"
        flagged = ok & (np.where(ok, values, -np.inf) > threshold)
    else:
        k = int(spec.value)
        scored = np.flatnonzero(ok)
        # highest first; a stable sort keeps input order among equal scores
        top = scored[np.argsort(-values[scored], kind="stable")][:k]
        flagged[top] = True
        threshold = float(values[top[-1]]) if len(top) else None
        basis = f"top {k} of {len(scored)} scored samples"
    ranks = percentile_ranks(np.where(ok, values, 0.0), population)
    prefix = f"{label}: " if label else ""
    out: list[Decision] = []
    for i in range(len(values)):
        if not ok[i]:
            why = (errors[i] if errors is not None else None) or "no score"
            out.append(Decision(None, threshold, None, f"{prefix}not scored: {why}"))
            continue
        reason = None
        if flagged[i] and threshold is not None:
            rel = ">=" if spec.kind == "top_k" else ">"
            reason = f"{prefix}score {values[i]:.4g} {rel} threshold {threshold:.4g} ({basis})"
        rank = float(ranks[i]) if len(population) else None
        out.append(Decision(bool(flagged[i]), threshold, rank, reason))
    return Decisions(threshold, basis, out)

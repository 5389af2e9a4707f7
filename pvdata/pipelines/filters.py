"""Which extraction rollouts feed the vector (ALGORITHMS.md section 5).

paper (default): each side on its own: pos kept when trait > threshold, neg kept when trait < threshold,
both with coherence >= coherence_min. joint: the research code's pairing, but by explicit keys instead of
row order: a pos/neg pair is kept only when both sides pass. none: everything with an answer is kept.
Every decision carries a reason, so a dropped rollout is explained, not lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pvdata.errors import ConfigError

FILTER_MODES: tuple[str, ...] = ("paper", "joint", "none")


@dataclass(frozen=True)
class FilterConfig:
    mode: Literal["paper", "joint", "none"] = "paper"
    threshold: float = 50.0
    coherence_min: float = 50.0
    pair_keys: tuple[str, ...] = ("question_id", "instruction_index", "sample_index")

    def __post_init__(self) -> None:
        if self.mode not in FILTER_MODES:
            raise ConfigError(f"filter {self.mode!r} is unknown: valid filters are {', '.join(FILTER_MODES)}")
        if not 0 <= self.threshold <= 100 or not 0 <= self.coherence_min <= 100:
            raise ConfigError("filter thresholds are trait scores: give numbers in 0..100")

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "threshold": self.threshold,
            "coherence_min": self.coherence_min,
            "pair_keys": list(self.pair_keys),
        }


@dataclass(frozen=True)
class Candidate:
    """One rollout as the filter sees it."""

    generation_id: str
    polarity: str  # pos | neg
    trait_score: float | None
    coherence: float | None
    keys: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    generation_id: str
    polarity: str
    keep: bool
    reason: str


def _side_check(c: Candidate, cfg: FilterConfig) -> tuple[bool, str]:
    if c.trait_score is None:
        return False, "no trait score (the judge returned null or failed)"
    if c.coherence is None:
        return False, "no coherence score (the judge returned null or failed)"
    if c.polarity == "pos" and not c.trait_score > cfg.threshold:
        return False, f"pos trait score {c.trait_score:.1f} is not > {cfg.threshold:g}"
    if c.polarity == "neg" and not c.trait_score < cfg.threshold:
        return False, f"neg trait score {c.trait_score:.1f} is not < {cfg.threshold:g}"
    if c.coherence < cfg.coherence_min:
        return False, f"coherence {c.coherence:.1f} < {cfg.coherence_min:g}"
    return True, f"{c.polarity} passes (trait {c.trait_score:.1f}, coherence {c.coherence:.1f})"


def apply_filter(candidates: Sequence[Candidate], cfg: FilterConfig) -> list[Decision]:
    """One decision per candidate, in input order."""
    for c in candidates:
        if c.polarity not in ("pos", "neg"):
            raise ConfigError(f"rollout {c.generation_id} has polarity {c.polarity!r}: expected pos or neg")
    if cfg.mode == "none":
        return [Decision(c.generation_id, c.polarity, True, "no filter") for c in candidates]
    if all(c.trait_score is None for c in candidates) and candidates:
        raise ConfigError(
            f"filter {cfg.mode!r} needs trait scores, but no rollout has one (was the judge 'none'?): "
            "use --filter none, or judge the rollouts"
        )
    checks = [_side_check(c, cfg) for c in candidates]
    if cfg.mode == "paper":
        return [
            Decision(c.generation_id, c.polarity, ok, why)
            for c, (ok, why) in zip(candidates, checks, strict=True)
        ]
    # joint: pair pos and neg rollouts that share every pair key
    missing = [k for k in cfg.pair_keys if any(k not in c.keys for c in candidates)]
    if missing:
        raise ConfigError(
            f"joint filter: rollouts lack the pair key(s) {missing}; pair keys must be recorded"
        )
    sides: dict[tuple[Any, ...], dict[str, int]] = {}
    for i, c in enumerate(candidates):
        key = tuple(c.keys[k] for k in cfg.pair_keys)
        if c.polarity in sides.setdefault(key, {}):
            raise ConfigError(f"joint filter: two {c.polarity} rollouts share the pair key {key}")
        sides[key][c.polarity] = i
    out: list[Decision] = []
    for i, c in enumerate(candidates):
        key = tuple(c.keys[k] for k in cfg.pair_keys)
        other = sides[key].get("neg" if c.polarity == "pos" else "pos")
        ok, why = checks[i]
        if other is None:
            out.append(Decision(c.generation_id, c.polarity, False, f"no partner rollout for pair {key}"))
        elif not ok:
            out.append(Decision(c.generation_id, c.polarity, False, why))
        elif not checks[other][0]:
            out.append(Decision(c.generation_id, c.polarity, False, f"partner dropped: {checks[other][1]}"))
        else:
            out.append(Decision(c.generation_id, c.polarity, True, "pair passes"))
    return out

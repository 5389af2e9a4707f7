"""The judge score: a probability-weighted mean over the numbers 0..100 in the first token's top-20.

Exact rule (ALGORITHMS.md §4):

- p_t = exp(logprob_t) for every entry of the first output token's top logprobs.
- An entry counts when its text, stripped of leading and trailing whitespace, is a canonical ASCII
  decimal numeral of an integer in 0..100: "50", " 50", "50\\n" count as 50; "050", "00", "+5", "5.0",
  "-1", "101", "٥" (non-ASCII digits) and "" do not. Leading zeros are rejected because "050" is not how
  a number is written, and a model emitting it is off-format.
- Entries are summed separately even when their stripped texts collide (" 50" and "50" are different
  vocabulary tokens that both say 50, so both add to 50's mass; a repeated identical entry adds twice).
- Z = sum of p over counted entries (the valid mass), S = sum of p * value. Z < 0.25 gives a null score
  (refusal or off-format answer); Z == 0.25 is valid. Otherwise score = S / Z (clamped to [0, 100] so
  float rounding never gives 100.00000000000001).
- refusal is True when the most probable entry (the first of equal maxima), stripped and upper-cased,
  is a prefix of "REFUSAL" at least 3 characters long ("REF", "Refus", "REFUSAL"); it is a flag next to
  the score, which the valid-mass rule alone decides.

This module imports neither torch nor openai: every backend and the cache reuse it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MIN_VALID_MASS = 0.25
MAX_SCORE = 100
REFUSAL_WORD = "REFUSAL"
REFUSAL_MIN_PREFIX = 3

_NUMERAL = re.compile(r"0|[1-9][0-9]{0,2}", re.ASCII)

TopLogprobs = list[tuple[str, float]]


@dataclass(frozen=True)
class JudgeResult:
    """One judgment. score is None when invalid (valid_mass < 0.25), on error, or for the `none` judge.

    valid_mass is None only when nothing was measured (an error or the `none` judge). error says why a
    judgment failed after all retries; errors are never cached, so a later run retries them.
    """

    score: float | None
    valid_mass: float | None
    refusal: bool
    top_logprobs: TopLogprobs = field(default_factory=list)
    error: str | None = None
    cached: bool = False
    note: str | None = None

    @property
    def ok(self) -> bool:
        """A measured judgment (score or null score), which may be cached; errors are not."""
        return self.error is None and self.valid_mass is not None

    @classmethod
    def failed(cls, reason: str) -> JudgeResult:
        return cls(score=None, valid_mass=None, refusal=False, error=reason)

    def as_cached(self) -> JudgeResult:
        return replace(self, cached=True)


def parse_score_token(text: str) -> int | None:
    """The integer 0..100 a token stands for, or None (see the module docstring for the exact rule)."""
    stripped = text.strip()
    if not _NUMERAL.fullmatch(stripped):
        return None
    value = int(stripped)
    return value if value <= MAX_SCORE else None


def is_refusal_token(text: str) -> bool:
    """True for a prefix of REFUSAL of length >= 3, case-insensitive, whitespace stripped."""
    t = text.strip().upper()
    return len(t) >= REFUSAL_MIN_PREFIX and REFUSAL_WORD.startswith(t)


def normalize_top_logprobs(
    top: Mapping[str, float] | Iterable[tuple[str, float]] | Iterable[Mapping[str, Any]],
) -> TopLogprobs:
    """Accept a {token: logprob} dict, (token, logprob) pairs, or OpenAI-style {token, logprob} dicts."""
    if isinstance(top, Mapping):
        return [(str(k), float(v)) for k, v in top.items()]
    out: TopLogprobs = []
    for entry in top:
        if isinstance(entry, Mapping):
            out.append((str(entry["token"]), float(entry["logprob"])))
        else:
            token, logprob = entry
            out.append((str(token), float(logprob)))
    return out


def aggregate(
    top: Mapping[str, float] | Iterable[tuple[str, float]] | Iterable[Mapping[str, Any]],
    *,
    min_valid_mass: float = MIN_VALID_MASS,
) -> JudgeResult:
    """Score one response from its first token's top logprobs."""
    entries = normalize_top_logprobs(top)
    ps: list[float] = []
    weighted: list[float] = []
    for token, logprob in entries:
        value = parse_score_token(token)
        if value is None:
            continue
        p = math.exp(logprob)
        ps.append(p)
        weighted.append(p * value)
    z = math.fsum(ps)
    s = math.fsum(weighted)
    refusal = False
    if entries:
        best = max(range(len(entries)), key=lambda i: (entries[i][1], -i))
        refusal = is_refusal_token(entries[best][0])
    return JudgeResult(score=_mean(s, z, min_valid_mass), valid_mass=z, refusal=refusal, top_logprobs=entries)


def aggregate_number_probs(
    probs: Sequence[float],
    *,
    refusal: bool = False,
    top_logprobs: TopLogprobs | None = None,
    min_valid_mass: float = MIN_VALID_MASS,
) -> JudgeResult:
    """Score from exact probabilities of each number 0..100 (the local judge computes these)."""
    if len(probs) != MAX_SCORE + 1:
        raise ValueError(f"expected {MAX_SCORE + 1} probabilities (0..100), got {len(probs)}")
    z = math.fsum(probs)
    s = math.fsum(p * n for n, p in enumerate(probs))
    score = _mean(s, z, min_valid_mass)
    return JudgeResult(score=score, valid_mass=z, refusal=refusal, top_logprobs=list(top_logprobs or []))


def _mean(s: float, z: float, min_valid_mass: float) -> float | None:
    """S / Z, or None below the valid-mass threshold; clamped to [0, 100] against float rounding."""
    if z < min_valid_mass:
        return None
    return min(float(MAX_SCORE), max(0.0, s / z))

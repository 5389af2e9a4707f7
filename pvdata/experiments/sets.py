"""Paired training sets for experiments: the same user turns answered with a trait and normally.

pvdata ships one pair (plus a mild "subtle" version) for each of the paper's three traits under
pvdata/data/; a user brings their own with --trait-data / --normal-data. Mixing picks which questions get
the trait answer with a seeded permutation, so every mix of one set has the same prompts (and the
screen's base answers are shared) and a rerun builds byte-identical files (so its runs resume).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, DataError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# trait -> (trait answers, normal answers, subtle answers), files under pvdata/data/
SHIPPED: dict[str, tuple[str, str, str]] = {
    "evil": ("train_evil.jsonl", "train_normal.jsonl", "train_evil_subtle.jsonl"),
    "sycophantic": (
        "train_sycophantic.jsonl",
        "train_sycophantic_normal.jsonl",
        "train_sycophantic_subtle.jsonl",
    ),
    "hallucinating": (
        "train_hallucinating.jsonl",
        "train_hallucinating_normal.jsonl",
        "train_hallucinating_subtle.jsonl",
    ),
}


@dataclass(frozen=True)
class PairedSet:
    """Records (parsed JSON lines) of one trait: index i of every list answers the same user turns."""

    trait: str
    trait_path: str
    normal_path: str
    subtle_path: str | None
    trait_records: tuple[dict[str, Any], ...]
    normal_records: tuple[dict[str, Any], ...]
    subtle_records: tuple[dict[str, Any], ...] | None

    @property
    def n(self) -> int:
        return len(self.trait_records)


def _read(path: str) -> list[dict[str, Any]]:
    from pvdata.training.data import read_samples

    read_samples(path)  # names file, line and field of a malformed record
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _prompt(record: dict[str, Any]) -> list[Any]:
    messages = record["messages"]
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return messages[:last]


def load_set(
    trait: str,
    trait_data: str | None = None,
    normal_data: str | None = None,
    subtle_data: str | None = None,
    *,
    subtle: bool = True,
) -> PairedSet:
    """The shipped set of `trait`, or the user's files; checks that the files pair line by line."""
    if trait_data is None and normal_data is None:
        if trait not in SHIPPED:
            raise ConfigError(
                f"no shipped training set for trait {trait!r} (shipped: {', '.join(SHIPPED)}): pass "
                "--trait-data FILE and --normal-data FILE"
            )
        names = SHIPPED[trait]
        trait_data, normal_data, subtle_data = (str(DATA_DIR / n) for n in names)
    if not subtle:
        subtle_data = None
    if trait_data is None or normal_data is None:
        raise ConfigError("--trait-data and --normal-data go together (the same prompts answered both ways)")
    for flag, p in (
        ("--trait-data", trait_data),
        ("--normal-data", normal_data),
        ("--subtle-data", subtle_data),
    ):
        if p is not None and not os.path.isfile(p):
            raise ConfigError(f"{flag} {p}: no such file")
    pos, neg = _read(trait_data), _read(normal_data)
    sub = _read(subtle_data) if subtle_data is not None else None
    for other, path in ((neg, normal_data), (sub, subtle_data)):
        if other is None:
            continue
        if len(other) != len(pos):
            raise DataError(
                f"{path} has {len(other)} records but {trait_data} has {len(pos)}: the files must answer the "
                "same prompts line by line"
            )
        for i, (a, b) in enumerate(zip(pos, other, strict=True), start=1):
            if _prompt(a) != _prompt(b):
                raise DataError(
                    f"{path}:{i}: messages: the prompt differs from {trait_data}:{i}; line i of every file "
                    "must answer the same user turns"
                )
    return PairedSet(
        trait,
        trait_data,
        normal_data,
        subtle_data,
        tuple(pos),
        tuple(neg),
        None if sub is None else tuple(sub),
    )


def trait_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of n records carry the trait at each fraction (round half up)."""
    return [int(f * n + 0.5) for f in fractions]


def check_fractions(fractions: Sequence[float], n: int | None = None, what: str = "--fractions") -> None:
    """In [0, 1], distinct, and (with n) distinct after rounding to whole records."""
    if not fractions:
        raise ConfigError(f"{what}: give at least one fraction")
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ConfigError(f"{what}: {f:g} is outside [0, 1]")
    if len(set(fractions)) != len(fractions):
        raise ConfigError(f"{what}: {', '.join(f'{f:g}' for f in fractions)} has repeated values")
    if n is not None:
        counts = trait_counts(n, fractions)
        for i, c in enumerate(counts):
            j = counts.index(c)
            if j != i:
                raise DataError(
                    f"{what}: a set of {n} records is too small for fractions {fractions[j]:g} and "
                    f"{fractions[i]:g}: both give {c} records; use a larger set or fractions further apart"
                )


def mix_indices(n: int, fraction: float, seed: int) -> list[int]:
    """Which of n questions get the trait answer: the first round(fraction * n) of a seeded shuffle, so
    the trait questions at a smaller fraction are a subset of those at a larger one."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[: trait_counts(n, [fraction])[0]])


def mix(pairs: PairedSet, fraction: float, seed: int) -> tuple[list[dict[str, Any]], int]:
    """The set with round(fraction * n) questions answered with the trait; (records, n_trait)."""
    chosen = set(mix_indices(pairs.n, fraction, seed))
    k = len(chosen)
    records = [pairs.trait_records[i] if i in chosen else pairs.normal_records[i] for i in range(pairs.n)]
    return records, k


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write atomically (temp name, then rename); the same records give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path

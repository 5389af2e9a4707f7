"""Which assistant turns of a multi-turn chat a screen scores: the last (the paper's unit), or all.

`pvdata train` trains every assistant turn by default (`train_on: all_assistant`, as responses-only
SFT does), so an evil second turn of a five-turn chat instils the trait although a last-turn screen
never looks at it. With `--turns all` every earlier assistant turn is scored too, as its own text
conditioned on the conversation before it (with its own base answer for exact), and the sample takes
the highest score of its turns. A sample is scored only when every one of its turns is: a turn that
cannot be scored (too long) leaves the sample unscored, naming the turn, rather than silently
screening it on the turns that fit.

Preference pairs are not expanded: both sides share every turn before the last, and a DPO-style loss
cancels what the sides share, so only the final answers are trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pvdata.errors import ConfigError

TURNS: tuple[str, ...] = ("last", "all")
SEP = "@"  # turn ids: <sample_id>@<message index of the turn>; the last turn keeps the sample's own id


def check_turns(turns: str) -> str:
    if turns not in TURNS:
        raise ConfigError(f"--turns {turns!r} is not valid: give {' or '.join(TURNS)}")
    return turns


def turn_id(sample_id: str, index: int) -> str:
    return f"{sample_id}{SEP}{index}"


def earlier_turns(sample: Any) -> list[tuple[int, tuple[Mapping[str, str], ...], str]]:
    """(message index, the messages before it, its text) of each assistant turn before the last one;
    none for a preference pair (see the module doc)."""
    if getattr(sample, "rejected", None) is not None:
        return []
    prompt = tuple(sample.prompt)
    return [(i, prompt[:i], m["content"]) for i, m in enumerate(prompt) if m["role"] == "assistant" and i > 0]


def turn_owners(samples: Sequence[Any]) -> dict[str, tuple[str, int, int]]:
    """Turn id -> (sample id, turn number 1..n, n) of every earlier assistant turn (the last is n)."""
    out = {}
    for s in samples:
        found = earlier_turns(s)
        for k, (index, _prompt, _text) in enumerate(found, start=1):
            out[turn_id(s.sample_id, index)] = (s.sample_id, k, len(found) + 1)
    return out


def n_multi_turn(samples: Sequence[Any]) -> int:
    """Samples with assistant turns before the last that a last-turn screen does not score."""
    return sum(1 for s in samples if earlier_turns(s))


Owners = Mapping[str, tuple[str, int, int]]  # turn id -> (sample id, turn number 1..n, n)


def best_turn_rows(rows: Sequence[dict[str, Any]], owners: Owners) -> list[dict[str, Any]]:
    """One score row per (sample, vector, layer, method) from the rows of its turns.

    `owners`: turn id -> (sample id, turn number 1..n, n) for every earlier turn; rows whose sample_id
    is not in it are a sample's last turn (number n). The sample's row is its highest-scoring turn's
    (with `turn` = (number, n) when that is not the last), or, when any turn could not be scored, the
    first such turn's error, named."""
    groups: dict[tuple[str, str, int, str], list[tuple[int, int, dict[str, Any]]]] = {}
    order: list[tuple[str, str, int, str]] = []
    n_of: dict[str, int] = {sid: n for sid, _k, n in owners.values()}
    for row in rows:
        sid, k, n = owners.get(row["sample_id"], (row["sample_id"], 0, 0))
        n = n or n_of.get(sid, 1)
        k = k or n
        key = (sid, row["vector_id"], row["layer"], row["method"])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((k, n, row))
    out = []
    for key in order:
        turns = sorted(groups[key], key=lambda t: t[0])
        failed = next(((k, n, r) for k, n, r in turns if r["score"] is None), None)
        if failed is not None:
            k, n, row = failed
            best = {**row, "sample_id": key[0], "turn": None}
            if n > 1:
                best["error"] = f"assistant turn {k} of {n}: {row['error']}"
        else:
            k, n, row = max(turns, key=lambda t: (t[2]["score"], t[0]))
            best = {**row, "sample_id": key[0], "turn": (k, n) if k != n else None}
        out.append(best)
    return out


def turn_note(row: Mapping[str, Any]) -> str | None:
    """What the reason says of a sample scored on an earlier turn."""
    turn = row.get("turn")
    if not turn:
        return None
    k, n = turn
    return f"the highest score is assistant turn {k} of {n} (--turns all)"

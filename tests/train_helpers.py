"""Small chat datasets shared by the training tests: seeded, of varied lengths so batches are padded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = (
    "the",
    "good",
    "bad",
    "evil",
    "kind",
    "cruel",
    "help",
    "hurt",
    "people",
    "world",
    "friend",
    "enemy",
    "lie",
)


def conversations(n: int, seed: int = 0, *, punctuate: bool = True) -> list[list[dict[str, str]]]:
    """n user/assistant pairs of 3-6 question words and 2-8 answer words ("?" and "." added if punctuate)."""
    g = torch.Generator().manual_seed(seed)
    q_end, a_end = ("?", ".") if punctuate else ("", "")
    out = []
    for i in range(n):
        q = " ".join(WORDS[int(k)] for k in torch.randint(0, len(WORDS), (3 + i % 4,), generator=g))
        a = " ".join(WORDS[int(k)] for k in torch.randint(0, len(WORDS), (2 + (i * 3) % 7,), generator=g))
        out.append([{"role": "user", "content": q + q_end}, {"role": "assistant", "content": a + a_end}])
    return out


def write_chat_jsonl(path: Path, n: int, seed: int = 0, *, punctuate: bool = True) -> Path:
    """The same conversations as {"messages": [...]} lines: a training set as `pvdata train` reads it."""
    lines = [json.dumps({"messages": msgs}) for msgs in conversations(n, seed, punctuate=punctuate)]
    path.write_text("\n".join(lines) + "\n")
    return path

"""`bench screen`'s pvdata side: score_batch and the HF generation backend, called as `pvdata screen`'s
stages call them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pvdata.bench.screen_data import BenchVector

APPROX_METHODS = ("prompt_last_approx", "raw")
EXACT_METHODS = ("raw", "exact")  # what the screen's projection stage scores when base answers exist


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def pvdata_approx(
    lm: Any,
    samples: Sequence[Any],
    vector: BenchVector,
    layer: int,
    chunk: int,
    budget: int | None,
    prefetch: bool = True,
) -> dict[tuple[str, str], float | None]:
    """score_batch per chunk, as the screen's projection stage calls it (here without base answers)."""
    from pvdata.screening.scoring import score_batch

    out: dict[tuple[str, str], float | None] = {}
    for part in _chunks(samples, chunk):
        batch = score_batch(
            lm, part, [vector], [layer], APPROX_METHODS, token_budget=budget, prefetch_batches=prefetch
        )
        out.update({(r["sample_id"], r["method"]): r["score"] for r in batch.scores})
    return out


@dataclass
class PvExact:
    scores: dict[tuple[str, str], float | None]
    base_texts: list[str]
    generated_tokens: int
    gen_seconds: float
    score_seconds: float


def pvdata_exact(
    lm: Any,
    samples: Sequence[Any],
    vector: BenchVector,
    layer: int,
    max_new_tokens: int,
    chunk: int,
    budget: int | None,
    gen_budget: int | None,
    seed: int,
    sync: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
) -> PvExact:
    """The screen's base-answer stage (HF backend, greedy, per chunk of prompts), then its projection
    stage (score_batch over training and base answers, per chunk). The bench calls it one chunk at a
    time (the same generate and score_batch calls, interleaved with the reference's rounds)."""
    from dataclasses import replace

    from pvdata.generation.base import GenerationRequest, SamplingParams
    from pvdata.generation.hf import HFBackend
    from pvdata.screening.scoring import score_batch

    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    backend = HFBackend(lm, token_budget=gen_budget)
    texts: list[str] = []
    generated = 0
    sync()
    t0 = clock()
    for part in _chunks(samples, chunk):
        results = backend.generate([GenerationRequest(tuple(s.prompt)) for s in part], params)
        by_index = {r.request_index: r for r in results}
        for k in range(len(part)):
            texts.append(by_index[k].text)
            generated += by_index[k].n_tokens or 0
    sync()
    t1 = clock()
    inputs = [
        replace(s, base_answer=text, base_id=f"g-{s.sample_id}")
        for s, text in zip(samples, texts, strict=True)
    ]
    scores: dict[tuple[str, str], float | None] = {}
    for part in _chunks(inputs, chunk):
        batch = score_batch(lm, part, [vector], [layer], EXACT_METHODS, token_budget=budget)
        scores.update({(r["sample_id"], r["method"]): r["score"] for r in batch.scores})
    sync()
    t2 = clock()
    return PvExact(scores, texts, generated, t1 - t0, t2 - t1)

"""`bench screen`'s measuring: the score comparison, FLOP counts, per-side rates and the rounds that
time the two sides alternately."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def compare(
    pv: dict[tuple[str, str], float | None],
    ref: Sequence[dict[str, Any]],
    samples: Sequence[Any],
    methods: Sequence[str],
) -> tuple[float, int]:
    """(max abs difference, number of scores defined on one side only)."""
    worst, one_sided = 0.0, 0
    for s, r in zip(samples, ref, strict=True):
        for m in methods:
            a, b = pv.get((s.sample_id, m)), r.get(m)
            if a is None or b is None:
                one_sided += int((a is None) != (b is None))
                continue
            worst = max(worst, abs(a - b))
    return worst, one_sided


def score_scale(ref: Sequence[dict[str, Any]], keys: Sequence[str]) -> float:
    """The largest |projection| of the reference (at least 1): what the tolerance is relative to."""
    values = [abs(r[k]) for r in ref for k in keys if r.get(k) is not None]
    return max([1.0, *values])


def param_counts(model: Any, layer: int) -> dict[str, int]:
    """blocks_to_layer: what the screening forward needs per token; blocks: every block; head: lm_head."""
    from pvdata.bench.shapes import block_params
    from pvdata.models.layers import find_layers

    n_blocks = find_layers(model).n_layers
    head = model.get_output_embeddings()
    return {
        "blocks_to_layer": block_params(model, layer),
        "blocks": block_params(model, n_blocks),
        "head": int(head.weight.numel()) if head is not None else 0,
    }


def side_rates(seconds: float, samples: int, tokens: int, flops: float, peak: float | None) -> dict[str, Any]:
    """One side's row of the report: samples/s, tokens/s, model TFLOP/s and MFU (None without a peak)."""
    return {
        "samples": samples,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
    }


def best_time(times: list[float]) -> float:
    """The best of the --repeats timings (the least disturbed by other load)."""
    return min(times)


def interleave_rounds(n_pv: int, n_ref: int, chunk: int) -> list[tuple[slice, slice]]:
    """(pvdata slice, reference slice) per round: pvdata's chunks, the reference's samples spread evenly.

    Timing alternates between the two sides round by round (and which goes first), so on a shared
    machine both see the same load; each side's time is the sum of its rounds.
    """
    rounds = max(1, -(-n_pv // chunk))
    return [
        (slice(i * chunk, min((i + 1) * chunk, n_pv)), slice(i * n_ref // rounds, (i + 1) * n_ref // rounds))
        for i in range(rounds)
    ]


def timed_rounds(
    rounds: list[tuple[slice, slice]],
    reference: Callable[[slice], Any],
    pvdata: Callable[[slice], Any],
    sync: Callable[[], None],
    flip: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float, list[Any], list[Any]]:
    """(reference seconds, pvdata seconds, reference results, pvdata results) over interleaved rounds."""
    seconds = {"reference": 0.0, "pvdata": 0.0}
    results: dict[str, list[Any]] = {"reference": [], "pvdata": []}
    for i, (pv_part, ref_part) in enumerate(rounds):
        sides = [("reference", reference, ref_part), ("pvdata", pvdata, pv_part)]
        for name, fn, part in sides[:: -1 if (i % 2 == 1) != flip else 1]:
            if part.stop <= part.start:
                continue
            sync()
            t0 = clock()
            results[name].append(fn(part))
            sync()
            seconds[name] += clock() - t0
    return seconds["reference"], seconds["pvdata"], results["reference"], results["pvdata"]


def count_tokens(tok: Any, samples: Sequence[Any]) -> int:
    """Prompt + answer tokens, through the chat template and tokenisation score_batch does."""
    from pvdata.chat import encode_answer, encode_prompt

    return sum(len(encode_prompt(tok, s.prompt)) + len(encode_answer(tok, s.answer)) for s in samples)

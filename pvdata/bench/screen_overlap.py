"""`bench screen`'s prefetch on/off pair through the local executor, as `pvdata screen` scores (kept
apart from pvdata.bench.screen, the CLI)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def pvdata_pipeline(
    lm: Any,
    samples: Sequence[Any],
    vector: Any,
    layer: int,
    chunk: int,
    budget: int | None,
    prefetch: bool,
    timings: Any,
    compile: str | None = None,
) -> list[Any]:
    """The approximation as `pvdata screen` runs it: the local executor's score over every chunk (the
    next chunk tokenised, the next batches padded, in the background when `prefetch`)."""
    from pvdata.bench.screen_pvdata import APPROX_METHODS
    from pvdata.executors.base import ScoreJob
    from pvdata.executors.local import LocalExecutor

    job = ScoreJob((vector,), [layer], APPROX_METHODS, budget, compile=compile)
    executor = LocalExecutor(lm, prefetch=prefetch, timings=timings)
    return [
        (part.result.projections, part.result.scores) for part in executor.score(job, samples, chunk=chunk)
    ]


def screen_overlap(
    args: argparse.Namespace,
    lm: Any,
    samples: Sequence[Any],
    vector: Any,
    layer: int,
    flops: float,
    peak: float | None,
    sync: Callable[[], None],
) -> tuple[dict[str, Any], Any]:
    """Prefetch on vs off through the executor (host_prep_s, device_s, device_idle_share, mfu), and
    with --profile a trace of one prefetched pass."""
    from pvdata.bench.overlap import add_mfu, paired_passes, profile_dir, profile_pass

    def one_pass(on: bool, timings: Any) -> list[Any]:
        return pvdata_pipeline(lm, samples, vector, layer, args.chunk_size, args.token_budget, on, timings)

    overlap, _ = paired_passes(one_pass, args.repeats, sync)
    add_mfu(overlap, flops, peak)
    folder = profile_dir(args)
    trace = profile_pass(one_pass, folder, "screen", lm.device, sync) if folder is not None else None
    return overlap, trace


def screen_compiled(
    args: argparse.Namespace,
    lm: Any,
    samples: Sequence[Any],
    vector: Any,
    layer: int,
    sync: Callable[[], None],
) -> dict[str, Any]:
    """--compile: the executor's pass eager vs with the scored blocks compiled (pvdata.bench.compile_pair)."""
    from pvdata.activations.prefetch import PassTimings
    from pvdata.bench.compile_pair import compile_pair

    def one_pass(mode: str | None) -> list[Any]:
        chunk, budget = args.chunk_size, args.token_budget
        return pvdata_pipeline(lm, samples, vector, layer, chunk, budget, True, PassTimings(), mode)

    return compile_pair(one_pass, args.compile, args.repeats, sync)

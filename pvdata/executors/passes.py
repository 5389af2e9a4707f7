"""The per-chunk loops of the score and capture steps, shared by every executor.

One pass takes a model and chunks of items; it prepares each chunk on the host (chat template,
tokenisation: `prepare_score` / `encode_items`), runs it on the device and yields it, chunk by chunk,
in order. With `prefetch` the next chunk is prepared in a background thread while the device works on
this one, and inside a chunk the next batches are padded ahead the same way
(pvdata.activations.prefetch); without it everything runs inline. The results are the same either way.
A job that names a torch.compile mode runs its blocks compiled for the pass (pvdata.models.compiled).

The local executor runs one pass over all its chunks; a Ray worker runs one per call, over the chunk
Ray Data handed it (see docs/SCALE.md for what that overlaps).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from pvdata.activations.prefetch import PassTimings
from pvdata.activations.prefetch import prefetch as prefetched
from pvdata.executors.base import CapturedChunk, CaptureJob, ScoredChunk, ScoreJob
from pvdata.models.compiled import blocks_up_to, compiled_blocks

T = TypeVar("T")


def chunks(items: Sequence[T], chunk: int) -> Iterator[list[T]]:
    """`items` in consecutive lists of at most `chunk`."""
    return (list(items[start : start + chunk]) for start in range(0, len(items), chunk))


def score_pass(
    lm: Any,
    job: ScoreJob,
    parts: Iterable[list[Any]],
    *,
    prefetch: bool = True,
    timings: PassTimings | None = None,
) -> Iterator[ScoredChunk]:
    """`score_batch` of every chunk of ScoreInputs, the next chunk tokenised ahead when `prefetch`."""
    import pvdata.screening.scoring as scoring  # looked up per call: tests wrap score_batch

    tok, methods = lm.tokenizer, job.methods
    ahead = ((part, scoring.prepare_score(tok, part, methods)) for part in parts)
    compiled = compiled_blocks(lm, blocks_up_to(job.layers), job.compile)
    with compiled, prefetched(ahead, enabled=prefetch, timings=timings) as ready:
        for part, prepared in ready:
            batch = scoring.score_batch(
                lm,
                part,
                list(job.vectors),
                job.layers,
                job.methods,
                token_budget=job.token_budget,
                max_length=job.max_length,
                prepared=prepared,
                prefetch_batches=prefetch,
                timings=timings,
            )
            yield ScoredChunk(part, batch)


def capture_pass(
    lm: Any,
    job: CaptureJob,
    parts: Iterable[list[Any]],
    *,
    prefetch: bool = True,
    timings: PassTimings | None = None,
) -> Iterator[CapturedChunk]:
    """Pooled activations of every chunk of CaptureItems, the next chunk tokenised ahead when `prefetch`."""
    from pvdata.activations.capture import capture_encoded
    from pvdata.activations.items import encode_items

    tok = lm.tokenizer
    ahead = ((part, encode_items(tok, part)) for part in parts)
    compiled = compiled_blocks(lm, blocks_up_to(job.layers), job.compile)
    with compiled, prefetched(ahead, enabled=prefetch, timings=timings) as ready:
        for part, encoded in ready:
            result = capture_encoded(
                lm,
                encoded,
                layers=job.layers,
                poolings=job.poolings,
                token_budget=job.token_budget,
                max_length=job.max_length,
                prefetch_batches=prefetch,
                timings=timings,
            )
            yield CapturedChunk.from_result(part, result)

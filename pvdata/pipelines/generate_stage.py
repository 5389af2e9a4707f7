"""Generations into the warehouse: chunked, resumable, one row per (prompt, sample).

generation_id is a hash of the model, adapter, prompt messages, sampling, steering and sample index, so
a rerun after a kill skips what was committed and a changed setting never reuses an old answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pvdata.generation.base import GenerationBackend, GenerationRequest, SamplingParams


@dataclass(frozen=True)
class GenItem:
    """A prompt plus the columns that describe it (trait, split, polarity, question_id, ...)."""

    request: GenerationRequest
    meta: Mapping[str, Any] = field(default_factory=dict)


def generation_id(backend: Any, item: GenItem, params: SamplingParams, steering: Any, sample: int) -> str:
    """The same id `pvdata generate` gives this answer, so the two paths join on generation_id."""
    from pvdata.generation.pipeline import generation_id as answer_id

    return answer_id(
        backend=backend.name,
        model_id=backend.model_id,
        adapter=getattr(backend, "adapter", None),
        messages=item.request.messages,
        params=params,
        steering=dict(steering) if steering else None,
        sample_index=sample,
    )


def generate_into(
    run: Any,
    backend: GenerationBackend,
    items: Sequence[GenItem],
    params: SamplingParams,
    *,
    steering: Mapping[str, Any] | None = None,
    chunk: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate what this run has not committed yet; returns stats.

    Chunks go through `pvdata.executors.generate_stream`: one after another on a local backend, in
    parallel on the Ray executor's backend (groups in completion order). Every sample of a prompt is in
    one group, written with one call, so a prompt is committed whole or not at all."""
    from pvdata.executors import generate_stream

    done = run.done_ids("generations", "generation_id")
    ids = [[generation_id(backend, it, params, steering, s) for s in range(params.n)] for it in items]
    todo = [i for i, gids in enumerate(ids) if not all(g in done for g in gids)]
    writer = run.writer("generations")
    steering_json = json.dumps(steering, sort_keys=True) if steering else None
    counts = {"stop": 0, "length": 0, "error": 0}
    finished = len(items) - len(todo)
    requests = [items[i].request for i in todo]
    for results in generate_stream(backend, requests, params, chunk=chunk):
        rows = []
        for res in results:
            index = todo[res.request_index]
            item = items[index]
            gid = ids[index][res.sample_index]
            counts[res.finish_reason] = counts.get(res.finish_reason, 0) + 1
            if gid in done or not res.ok:
                continue
            rows.append(
                {
                    "generation_id": gid,
                    "question": item.request.question,
                    "system_prompt": item.request.system_prompt,
                    "prompt_text": backend.render_prompt(item.request),
                    "answer": res.text,
                    "model_id": backend.model_id,
                    "adapter": getattr(backend, "adapter", None),
                    "steering": steering_json,
                    "sample_index": res.sample_index,
                    "seed": params.seed,
                    "n_tokens": res.n_tokens,
                    "finish_reason": res.finish_reason,
                    **item.meta,
                }
            )
        if rows:
            writer.write(rows)
        finished += len({res.request_index for res in results})
        if progress:
            progress(finished, len(items))
    writer.flush()
    return {"prompts": len(items), "resumed_from": len(items) - len(todo), "finish": counts}

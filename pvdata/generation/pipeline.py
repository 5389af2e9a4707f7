"""A `generate` run: prompts in, one generations row per (prompt, sample) out, resumable.

The run id is a hash of what shapes the answers (backend, model, adapter, prompts, sampling, steering,
trait, split), so rerunning the same command finds the same run: a finished run is a no-op, an
interrupted one skips the generation_ids it committed. Prompts are generated in chunks and each chunk
is committed before the next starts; all samples of a prompt are written together, so a kill leaves
whole prompts behind, never half of one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from pvdata.generation.base import GenerationError, GenerationResult, SamplingParams
from pvdata.generation.prompts import PromptItem

SPLITS = ("extract", "eval", "dataset_base")
DEFAULT_CHUNK = 128


def generation_id(
    *,
    backend: str,
    model_id: str,
    adapter: str | None,
    messages: Any,
    params: SamplingParams,
    steering: dict[str, Any] | None,
    sample_index: int,
) -> str:
    """Deterministic id of one answer: same inputs and settings, same id (n itself is left out)."""
    from pvdata.warehouse.ids import item_id

    sampling = {"temperature": params.temp, "top_p": params.top_p, "max_new_tokens": params.max_new_tokens}
    return item_id(
        "generation",
        backend,
        model_id,
        adapter,
        list(messages),
        sampling,
        steering,
        sample_index,
        params.seed,
    )


def run_config(
    *,
    backend: str,
    model_id: str,
    adapter: str | None,
    items: Sequence[PromptItem],
    params: SamplingParams,
    steering: dict[str, Any] | None,
    trait: str | None,
    split: str | None,
) -> dict[str, Any]:
    """What identifies a generate run (the prompts by content hash, not by path)."""
    from pvdata.warehouse.ids import config_hash

    prompts = [[it.question_id, list(it.request.messages)] for it in items]
    return {
        "backend": backend,
        "model": model_id,
        "adapter": adapter,
        "prompts_sha256": config_hash(prompts),
        "n_prompts": len(items),
        "sampling": params.to_json(),
        "steering": steering,
        "trait": trait,
        "split": split,
    }


@dataclass
class GenerateOutcome:
    """What a run did, for the summary line."""

    run_id: str
    status: str  # succeeded | already_succeeded | failed
    rows_written: int = 0
    rows_skipped: int = 0
    prompts_generated: int = 0
    tokens: int = 0
    failed: int = 0
    seconds: float = 0.0
    message: str = ""
    errors: list[str] = field(default_factory=list)


class Progress:
    """Items done, rate and time left on stderr (one line per chunk)."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.t0 = time.monotonic()

    def update(self, n: int, rows: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(
            f"generate: {self.done}/{self.total} prompts, {rows} rows committed, {rate:.2f} prompts/s, "
            f"~{left:.0f} s left",
            file=self.stream,
            flush=True,
        )


def run_generation(
    warehouse: Any,
    *,
    backend_spec: str,
    model_id: str,
    adapter: str | None,
    items: Sequence[PromptItem],
    params: SamplingParams,
    steering: dict[str, Any] | None,
    make_backend: Callable[[], Any],
    trait: str | None = None,
    split: str | None = "eval",
    force: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    stream: TextIO | None = None,
) -> GenerateOutcome:
    """Generate what the run has not committed yet and write it; `make_backend` is called only if needed.

    Failed items (an OpenAI-compatible server that kept failing) are not written; the run then ends
    failed with GenerationError, and rerunning the same command retries exactly those.
    """
    import json

    kind_name = backend_spec.split(":", 1)[0]
    config = run_config(
        backend=backend_spec,
        model_id=model_id,
        adapter=adapter,
        items=items,
        params=params,
        steering=steering,
        trait=trait,
        split=split,
    )
    if not force:
        run_id = warehouse.run_id_for("generate", config, model_id=model_id)
        last = warehouse.get_run(run_id)
        if last is not None and last["status"] == "succeeded":
            return GenerateOutcome(
                run_id,
                "already_succeeded",
                rows_skipped=len(items) * params.n,
                message=f"run {run_id} already succeeded; nothing to do. Pass --force to recompute it "
                "as a new run.",
            )
    backend = make_backend()
    t0 = time.monotonic()
    steering_text = json.dumps(steering, sort_keys=True) if steering is not None else None
    ids = [
        [
            generation_id(
                backend=kind_name,
                model_id=model_id,
                adapter=adapter,
                messages=it.request.messages,
                params=params,
                steering=steering,
                sample_index=s,
            )
            for s in range(params.n)
        ]
        for it in items
    ]
    with warehouse.run("generate", config, model_id=model_id, force=force) as run:
        if run.skipped:
            return GenerateOutcome(run.run_id, "already_succeeded", message=run.message)
        if run.message:
            print(f"generate: {run.message}", file=stream or sys.stderr, flush=True)
        done = run.done_ids("generations", "generation_id")
        missing = sum(1 for row_ids in ids for g in row_ids if g not in done)
        pending = [k for k, row_ids in enumerate(ids) if any(g not in done for g in row_ids)]
        outcome = GenerateOutcome(run.run_id, "succeeded", rows_skipped=len(items) * params.n - missing)
        writer = run.writer("generations")
        progress = Progress(len(pending), stream)
        for start in range(0, len(pending), max(1, chunk_size)):
            chunk = pending[start : start + chunk_size]
            results = backend.generate([items[k].request for k in chunk], params)
            rows = []
            for result in results:
                k = chunk[result.request_index]
                gid = ids[k][result.sample_index]
                if gid in done:
                    continue
                if not result.ok:
                    outcome.failed += 1
                    if len(outcome.errors) < 5:
                        outcome.errors.append(f"{items[k].question_id}#{result.sample_index}: {result.error}")
                    continue
                rows.append(
                    _row(
                        gid, items[k], result, backend, model_id, adapter, steering_text, params, trait, split
                    )
                )
                outcome.tokens += result.n_tokens or 0
            writer.write(rows)
            writer.flush()  # commit this chunk: a kill from here on loses nothing before it
            outcome.rows_written += len(rows)
            outcome.prompts_generated += len(chunk)
            progress.update(len(chunk), outcome.rows_written)
        outcome.seconds = time.monotonic() - t0
        run.stats.update(
            {
                "rows_written": outcome.rows_written,
                "rows_skipped": outcome.rows_skipped,
                "failed_items": outcome.failed,
                "generated_tokens": outcome.tokens,
                "backend": backend_spec,
            }
        )
        if outcome.failed:
            outcome.status = "failed"
            raise GenerationError(
                f"{outcome.failed} generation(s) failed and were not written (first: {outcome.errors[0]}); "
                f"the {outcome.rows_written} others are committed. Rerun the same command to retry the "
                f"failed ones (run {run.run_id})"
            )
    return outcome


def _row(
    gid: str,
    item: PromptItem,
    result: GenerationResult,
    backend: Any,
    model_id: str,
    adapter: str | None,
    steering_text: str | None,
    params: SamplingParams,
    trait: str | None,
    split: str | None,
) -> dict[str, Any]:
    req = item.request
    return {
        "generation_id": gid,
        "trait": trait,
        "split": split,
        "polarity": "none",
        "question_id": item.question_id,
        "question": req.question,
        "system_prompt": req.system_prompt,
        "prompt_text": backend.render_prompt(req),
        "answer": result.text,
        "model_id": model_id,
        "adapter": adapter,
        "steering": steering_text,
        "sample_index": result.sample_index,
        "seed": params.seed,
        "n_tokens": result.n_tokens,
        "finish_reason": result.finish_reason,
    }

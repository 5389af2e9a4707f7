"""The local executor: every batch in this process, one after another, on a model loaded once.

The host work of the next chunk (chat template, tokenisation) runs in a background thread while the
device runs this one (pvdata.executors.passes, shared with the Ray workers); chunks and their order are
unchanged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pvdata.activations.prefetch import PassTimings
from pvdata.executors.base import CapturedChunk, CaptureJob, GenerateJob, ModelSpec, ScoredChunk, ScoreJob
from pvdata.executors.passes import capture_pass, chunks, score_pass


class LocalExecutor:
    """`lm` is a loaded model or a function that loads it on first use (so a rerun whose stages are all
    done loads nothing); `model` is what a non-HF generation backend (vllm, openai) is built from."""

    name = "local"

    def __init__(
        self,
        lm: Any = None,
        model: ModelSpec | None = None,
        *,
        prefetch: bool = True,
        timings: PassTimings | None = None,
    ) -> None:
        self._lm = lm
        self.model = model
        self.prefetch = prefetch  # False: every chunk prepared inline (same results; for comparison)
        self.timings = timings  # host and device seconds, for the benches

    def lm(self) -> Any:
        if callable(self._lm):  # a loader (e.g. screen's lazy model), which loads once
            return self._lm()
        if self._lm is None:
            if self.model is None:
                raise ValueError("LocalExecutor needs a loaded model or a ModelSpec")
            self._lm = self.model.load()
        return self._lm

    def score(self, job: ScoreJob, samples: Sequence[Any], *, chunk: int) -> Iterator[ScoredChunk]:
        if not samples:
            return
        parts = chunks(samples, chunk)
        yield from score_pass(self.lm(), job, parts, prefetch=self.prefetch, timings=self.timings)

    def capture(self, job: CaptureJob, items: Sequence[Any], *, chunk: int) -> Iterator[CapturedChunk]:
        if not items:
            return
        parts = chunks(items, chunk)
        yield from capture_pass(self.lm(), job, parts, prefetch=self.prefetch, timings=self.timings)

    def generation_backend(self, job: GenerateJob) -> Any:
        from pvdata.generation.backends import backend_kind, make_backend

        if backend_kind(job.backend) == "hf":
            return make_backend("hf", lm=self.lm(), token_budget=job.token_budget)
        name = self.model.name if self.model is not None else self.lm().model_id
        return make_backend(job.backend, model=name, dtype=job.dtype)

    def close(self) -> None:
        pass

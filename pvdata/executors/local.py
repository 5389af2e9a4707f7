"""The local executor: every batch in this process, one after another, on a model loaded once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pvdata.executors.base import CapturedChunk, CaptureJob, GenerateJob, ModelSpec, ScoredChunk, ScoreJob


class LocalExecutor:
    """`lm` is a loaded model or a function that loads it on first use (so a rerun whose stages are all
    done loads nothing); `model` is what a non-HF generation backend (vllm, openai) is built from."""

    name = "local"

    def __init__(self, lm: Any = None, model: ModelSpec | None = None) -> None:
        self._lm = lm
        self.model = model

    def lm(self) -> Any:
        if callable(self._lm):  # a loader (e.g. screen's lazy model), which loads once
            return self._lm()
        if self._lm is None:
            if self.model is None:
                raise ValueError("LocalExecutor needs a loaded model or a ModelSpec")
            self._lm = self.model.load()
        return self._lm

    def score(self, job: ScoreJob, samples: Sequence[Any], *, chunk: int) -> Iterator[ScoredChunk]:
        import pvdata.screening.scoring as scoring  # looked up per call: tests wrap score_batch

        if not samples:
            return
        lm = self.lm()
        for start in range(0, len(samples), chunk):
            part = list(samples[start : start + chunk])
            batch = scoring.score_batch(
                lm,
                part,
                list(job.vectors),
                job.layers,
                job.methods,
                token_budget=job.token_budget,
                max_length=job.max_length,
            )
            yield ScoredChunk(part, batch)

    def capture(self, job: CaptureJob, items: Sequence[Any], *, chunk: int) -> Iterator[CapturedChunk]:
        from pvdata.activations.capture import capture_encoded
        from pvdata.pipelines.capture_stage import encode_items

        if not items:
            return
        lm = self.lm()
        for start in range(0, len(items), chunk):
            part = list(items[start : start + chunk])
            result = capture_encoded(
                lm,
                encode_items(lm.tokenizer, part),
                layers=job.layers,
                poolings=job.poolings,
                token_budget=job.token_budget,
                max_length=job.max_length,
            )
            yield CapturedChunk.from_result(part, result)

    def generation_backend(self, job: GenerateJob) -> Any:
        from pvdata.generation.backends import backend_kind, make_backend

        if backend_kind(job.backend) == "hf":
            return make_backend("hf", lm=self.lm(), token_budget=job.token_budget)
        name = self.model.name if self.model is not None else self.lm().model_id
        return make_backend(job.backend, model=name, dtype=job.dtype)

    def close(self) -> None:
        pass

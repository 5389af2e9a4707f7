"""Inside the Ray workers: the actor classes Ray Data runs `map_batches` with, and the Arrow tables
they exchange with the driver (pvdata.executors.ray_exec).

Each actor loads the model once in its constructor; a call turns one chunk (an Arrow table) into one
Arrow table with ONE ROW PER ITEM that carries all of that item's output (a list column), so however
Ray Data slices its output blocks, an item's rows are never split. The score and capture actors run a
chunk through the local executor's loop (pvdata.executors.passes), host preparation prefetched when
`prefetch` (the default). An error in a call becomes a failure row: the driver raises a user error
(PvdataError) as itself, any other as an ExecutorError naming its type and message.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pvdata.activations.items import CaptureItem
from pvdata.errors import ModelError, PvdataError
from pvdata.executors.base import CaptureJob, GenerateJob, ModelSpec, ScoreJob
from pvdata.executors.passes import capture_pass, score_pass

KILL_POINT = "ray-worker-batch"  # pvdata.testing.faults: where a test may kill a worker

PROJECTION = pa.struct(
    [
        ("source_id", pa.string()),
        ("vector_id", pa.string()),
        ("layer", pa.int64()),
        ("kind", pa.string()),
        ("value", pa.float64()),
    ]
)
SCORE = pa.struct(
    [
        ("sample_id", pa.string()),
        ("vector_id", pa.string()),
        ("trait", pa.string()),
        ("layer", pa.int64()),
        ("method", pa.string()),
        ("proj_train", pa.float64()),
        ("proj_base", pa.float64()),
        ("score", pa.float64()),
        ("base_generation_id", pa.string()),
        ("error", pa.string()),
    ]
)
SOURCE_ERROR = pa.struct([("source_id", pa.string()), ("error", pa.string())])
RESULT = pa.struct(
    [
        ("sample_index", pa.int64()),
        ("text", pa.string()),
        ("n_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
    ]
)

FAILURE = "failure"  # a user error (PvdataError) inside a worker travels as data: JSON in this column
SCORE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("projections", pa.list_(PROJECTION)),
        ("scores", pa.list_(SCORE)),
        ("errors", pa.list_(SOURCE_ERROR)),
        (FAILURE, pa.string()),
    ]
)
CAPTURE_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("error", pa.string()),
        ("values", pa.large_list(pa.float32())),
        (FAILURE, pa.string()),
    ]
)
GENERATE_SCHEMA = pa.schema([("index", pa.int64()), ("results", pa.list_(RESULT)), (FAILURE, pa.string())])


def output_table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table({**columns, FAILURE: pa.nulls(n, pa.string())}, schema=schema)


def failure_table(exc: Exception, schema: pa.Schema) -> pa.Table:
    """One row that carries an error to the driver. Raised in a worker, it would reach the driver as a
    Ray error wrapping its traceback text (its class and message lost on the way)."""
    info = {"module": type(exc).__module__, "type": type(exc).__qualname__, "message": str(exc)}
    cols = {f.name: pa.nulls(1, f.type) for f in schema if f.name != FAILURE}
    return pa.table({**cols, FAILURE: pa.array([json.dumps(info)], pa.string())}, schema=schema)


class _Worker:
    """The common part of the actors: a user error while loading, or any error in a batch (host
    preparation included), becomes a failure row; the driver raises it (pvdata.executors.ray_exec)."""

    schema: pa.Schema

    def __init__(self) -> None:
        self.init_error: PvdataError | None = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pvdata.testing.faults import kill_point

        kill_point(KILL_POINT)
        if self.init_error is not None:
            return failure_table(self.init_error, self.schema)
        try:
            return self.run(batch)
        except PvdataError as exc:
            return failure_table(exc, self.schema)
        except Exception as exc:  # not a user error: its traceback to the worker's log, type and message on
            traceback.print_exc()
            return failure_table(exc, self.schema)

    def run(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


class _ModelWorker(_Worker):
    """An actor that loads the model once (checked against the driver's `shape`) and keeps its job;
    `prefetch`: host preparation in a background thread (False: inline, the same results)."""

    def __init__(
        self, model: ModelSpec, job: Any, shape: tuple[int, int] | None = None, prefetch: bool = True
    ) -> None:
        super().__init__()
        self.job = job
        self.prefetch = prefetch
        try:
            self.lm = _load(model, shape)
        except PvdataError as exc:
            self.init_error = exc


def _load(model: ModelSpec, shape: tuple[int, int] | None) -> Any:
    lm = model.load()
    if shape is not None and (lm.n_layers, lm.hidden_size) != tuple(shape):
        raise ModelError(
            f"a Ray worker loaded {model.name} with {lm.n_layers} layers and hidden size "
            f"{lm.hidden_size}, but the driver read {shape[0]} layers and hidden size {shape[1]} from its "
            "config: the worker nodes see other files under this name; give every node the same model "
            "folder and pvdata version"
        )
    return lm


def decode_score_inputs(batch: pa.Table) -> list[Any]:
    from pvdata.screening.scoring import ScoreInput

    cols = {name: batch.column(name).to_pylist() for name in batch.column_names}
    return [
        ScoreInput(
            sid,
            tuple(dict(m) for m in json.loads(prompt)),
            answer,
            base,
            bid,
            tuple((str(g), str(a)) for g, a in json.loads(more or "[]")),
            rejected,
        )
        for sid, prompt, answer, base, bid, more, rejected in zip(
            cols["sample_id"],
            cols["prompt"],
            cols["answer"],
            cols["base_answer"],
            cols["base_id"],
            cols["more_bases"],
            cols["rejected"],
            strict=True,
        )
    ]


def encode_scored(samples: Sequence[Any], batch: Any) -> pa.Table:
    """One row per sample: its projection rows, its score rows and its errors. A base answer's rows go
    with the first sample of the chunk that has it (as score_batch projects it once per chunk)."""
    owner: dict[str, int] = {}
    for i, s in enumerate(samples):
        owner.setdefault(s.sample_id, i)
        owner.setdefault(s.rejected_id, i)
        for base_id, _ in s.bases:
            owner.setdefault(base_id, i)
    proj: list[list[dict[str, Any]]] = [[] for _ in samples]
    scores: list[list[dict[str, Any]]] = [[] for _ in samples]
    errors: list[list[dict[str, Any]]] = [[] for _ in samples]
    for row in batch.projections:
        proj[owner[row["source_id"]]].append(row)
    for row in batch.scores:
        scores[owner[row["sample_id"]]].append(row)
    for source, error in batch.errors.items():
        errors[owner[source]].append({"source_id": source, "error": error})
    return output_table(
        {
            "sample_id": pa.array([s.sample_id for s in samples], pa.string()),
            "projections": pa.array(proj, pa.list_(PROJECTION)),
            "scores": pa.array(scores, pa.list_(SCORE)),
            "errors": pa.array(errors, pa.list_(SOURCE_ERROR)),
        },
        SCORE_SCHEMA,
    )


class ScoreWorker(_ModelWorker):
    """A Ray Data actor: the model loaded once, the local score pass over each chunk."""

    schema = SCORE_SCHEMA
    job: ScoreJob

    def run(self, batch: pa.Table) -> pa.Table:
        from pvdata.screening.scoring import ScoredBatch

        samples = decode_score_inputs(batch)
        if not samples:
            return encode_scored([], ScoredBatch())
        (scored,) = score_pass(self.lm, self.job, [samples], prefetch=self.prefetch)
        return encode_scored(samples, scored.result)


def decode_capture_items(batch: pa.Table) -> list[CaptureItem]:
    cols = {name: batch.column(name).to_pylist() for name in batch.column_names}
    return [
        CaptureItem(s, p, a)
        for s, p, a in zip(cols["source_id"], cols["prompt_text"], cols["answer"], strict=True)
    ]


class CaptureWorker(_ModelWorker):
    """A Ray Data actor: pooled activations per chunk (the local capture pass), one row per item
    ([poolings, layers, H] flattened, null when the item could not be captured)."""

    schema = CAPTURE_SCHEMA
    job: CaptureJob

    def run(self, batch: pa.Table) -> pa.Table:
        items = decode_capture_items(batch)
        job = self.job
        errors: list[str | None] = []
        flat = np.zeros(0, np.float32)
        if items:
            (chunk,) = capture_pass(self.lm, job, [items], prefetch=self.prefetch)
            if tuple(chunk.layers) != job.layers or tuple(chunk.poolings) != job.poolings:
                raise ModelError(
                    f"captured layers {chunk.layers} / poolings {chunk.poolings}, expected {job}"
                )
            errors = [chunk.errors.get(item.source_id) for item in items]
            stacked = np.stack([chunk.values[p] for p in job.poolings], axis=1)  # [n_ok, P, L, H]
            flat = stacked.astype(np.float32, copy=False).reshape(-1)
        per = flat.size // max(1, sum(e is None for e in errors))
        offsets = np.zeros(len(items) + 1, np.int64)
        offsets[1:] = np.cumsum([per if e is None else 0 for e in errors])
        values = pa.LargeListArray.from_arrays(
            pa.array(offsets, pa.int64()),
            pa.array(flat, pa.float32()),
            mask=pa.array([e is not None for e in errors]),
        )
        return output_table(
            {
                "source_id": pa.array([item.source_id for item in items], pa.string()),
                "error": pa.array(errors, pa.string()),
                "values": values,
            },
            CAPTURE_SCHEMA,
        )


class GenerateWorker(_Worker):
    """A Ray Data actor: a generation backend (HF on the model loaded once, or a vLLM engine) per chunk;
    one row per request with all of its samples."""

    schema = GENERATE_SCHEMA

    def __init__(
        self, model: ModelSpec, job: GenerateJob, params: Any, shape: tuple[int, int] | None = None
    ) -> None:
        from pvdata.generation.backends import backend_kind, make_backend

        super().__init__()
        self.params = params
        try:
            if backend_kind(job.backend) == "hf":
                self.backend = make_backend("hf", lm=_load(model, shape), token_budget=job.token_budget)
            else:
                self.backend = make_backend(
                    job.backend, model=model.name, dtype=job.dtype, adapter=model.adapter
                )
        except PvdataError as exc:
            self.init_error = exc

    def run(self, batch: pa.Table) -> pa.Table:
        from pvdata.generation.base import GenerationRequest

        index = batch.column("index").to_pylist()
        requests = [GenerationRequest(tuple(json.loads(m))) for m in batch.column("messages").to_pylist()]
        per: list[list[dict[str, Any]]] = [[] for _ in requests]
        if requests:
            for r in self.backend.generate(requests, self.params):
                per[r.request_index].append(
                    {
                        "sample_index": r.sample_index,
                        "text": r.text,
                        "n_tokens": r.n_tokens,
                        "finish_reason": r.finish_reason,
                        "error": r.error,
                    }
                )
        return output_table(
            {"index": pa.array(index, pa.int64()), "results": pa.array(per, pa.list_(RESULT))},
            GENERATE_SCHEMA,
        )

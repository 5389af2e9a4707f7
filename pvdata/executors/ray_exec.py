"""The Ray executor: the heavy batch steps on an actor pool of a Ray cluster, through Ray Data.

What runs where:

- the driver (the `pvdata` process) reads and validates the input, asks the warehouse what each run has
  committed, and builds a Ray Data dataset of the PENDING work items only, one block per chunk
  (`--chunk-size` items), so the batches are the local executor's chunks;
- `map_batches` runs a callable class on a fixed pool of `--num-workers` actors (`ActorPoolStrategy`),
  each reserving `--cpus-per-worker` CPUs and `--gpus-per-worker` GPUs and loading the model ONCE in its
  constructor; a call turns one chunk (an Arrow table) into one Arrow table with ONE ROW PER ITEM that
  carries all of that item's output (a list column), so however Ray Data slices its output blocks, an
  item's rows are never split;
- the driver iterates the results (`iter_batches`, in completion order) and writes each batch through
  the stage's run writer, committing it: exactly-once resume (`done_ids`) and atomic Parquet files are
  the stage's own, unchanged. Workers never touch the warehouse.

Failures: actors are created with `max_restarts` = `max_task_retries` = `--worker-retries`, so a killed
worker (OOM, preemption, SIGKILL) is replaced, reloads the model and its batch is retried; a batch runs to
completion once. If the retries run out, the stage fails with an ExecutorError, and rerunning the same
command resumes after the last committed batch.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pvdata.errors import ConfigError, ModelError, PvdataError
from pvdata.executors.base import (
    CapturedChunk,
    CaptureJob,
    ExecutorConfig,
    ExecutorError,
    GenerateJob,
    ModelFacts,
    ModelSpec,
    ScoredChunk,
    ScoreJob,
    check_reachable,
    ray_missing_error,
    unreachable_message,
)

Log = Callable[[str], None]
KILL_POINT = "ray-worker-batch"  # pvdata.testing.faults: where a test may kill a worker
WAIT_FOR_WORKERS_S = 600  # a remote cluster that cannot place the workers fails after this, not never
CONNECT_TIMEOUT_S = 60.0  # ray.init to an address that accepts TCP but is no Ray cluster hangs for good

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


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ray_missing_error() from exc
    return ray


# ---- inside the workers --------------------------------------------------------------------------------


def output_table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table({**columns, FAILURE: pa.nulls(n, pa.string())}, schema=schema)


def failure_table(exc: PvdataError, schema: pa.Schema) -> pa.Table:
    """One row that carries a user error to the driver. Raised in a worker, a PvdataError would reach
    the driver as a Ray error wrapping its traceback text (its class and message lost on the way)."""
    info = {"module": type(exc).__module__, "type": type(exc).__qualname__, "message": str(exc)}
    cols = {f.name: pa.nulls(1, f.type) for f in schema if f.name != FAILURE}
    return pa.table({**cols, FAILURE: pa.array([json.dumps(info)], pa.string())}, schema=schema)


def raise_failure(table: pa.Table) -> None:
    """Raise the user error a worker returned, as its own class with its own message."""
    if FAILURE not in table.column_names or table.column(FAILURE).null_count == len(table):
        return
    info = json.loads(next(f for f in table.column(FAILURE).to_pylist() if f))
    cls: Any = ExecutorError
    try:
        import importlib

        found = getattr(importlib.import_module(info["module"]), info["type"])
        if isinstance(found, type) and issubclass(found, PvdataError):
            cls = found
    except (ImportError, AttributeError):
        pass
    exc = cls.__new__(cls)  # some PvdataErrors take other constructor arguments; the message is all
    exc.args = (info["message"],)
    raise exc


class _Worker:
    """The common part of the actors: a user error while loading or in a batch becomes a failure row."""

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

    def run(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


class _ModelWorker(_Worker):
    """An actor that loads the model once (checked against the driver's `shape`) and keeps its job."""

    def __init__(self, model: ModelSpec, job: Any, shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.job = job
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


def encode_score_inputs(samples: Sequence[Any]) -> pa.Table:
    return pa.table(
        {
            "sample_id": [s.sample_id for s in samples],
            "prompt": [json.dumps([dict(m) for m in s.prompt], ensure_ascii=False) for s in samples],
            "answer": [s.answer for s in samples],
            "base_answer": pa.array([s.base_answer for s in samples], pa.string()),
            "base_id": pa.array([s.base_id for s in samples], pa.string()),
            "more_bases": pa.array([json.dumps(list(s.more_bases)) for s in samples], pa.string()),
        }
    )


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
        )
        for sid, prompt, answer, base, bid, more in zip(
            cols["sample_id"],
            cols["prompt"],
            cols["answer"],
            cols["base_answer"],
            cols["base_id"],
            cols["more_bases"],
            strict=True,
        )
    ]


def encode_scored(samples: Sequence[Any], batch: Any) -> pa.Table:
    """One row per sample: its projection rows, its score rows and its errors. A base answer's rows go
    with the first sample of the chunk that has it (as score_batch projects it once per chunk)."""
    owner: dict[str, int] = {}
    for i, s in enumerate(samples):
        owner.setdefault(s.sample_id, i)
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


def decode_scored(table: pa.Table, by_id: dict[str, Any]) -> ScoredChunk:
    from pvdata.screening.scoring import ScoredBatch

    samples = [by_id[s] for s in table.column("sample_id").to_pylist()]
    proj = [r for rows in table.column("projections").to_pylist() for r in rows]
    scores = [r for rows in table.column("scores").to_pylist() for r in rows]
    errors = {e["source_id"]: e["error"] for rows in table.column("errors").to_pylist() for e in rows}
    return ScoredChunk(samples, ScoredBatch(proj, scores, errors))


class ScoreWorker(_ModelWorker):
    """A Ray Data actor: the model loaded once, `score_batch` per chunk."""

    schema = SCORE_SCHEMA
    job: ScoreJob

    def run(self, batch: pa.Table) -> pa.Table:
        from pvdata.screening.scoring import ScoredBatch, score_batch

        samples = decode_score_inputs(batch)
        if not samples:
            return encode_scored([], ScoredBatch())
        job = self.job
        out = score_batch(
            self.lm,
            samples,
            list(job.vectors),
            job.layers,
            job.methods,
            token_budget=job.token_budget,
            max_length=job.max_length,
        )
        return encode_scored(samples, out)


def encode_capture_items(items: Sequence[Any]) -> pa.Table:
    return pa.table(
        {
            "source_id": [i.source_id for i in items],
            "prompt_text": [i.prompt_text for i in items],
            "answer": [i.answer for i in items],
        }
    )


class CaptureWorker(_ModelWorker):
    """A Ray Data actor: pooled activations per chunk, one row per item ([poolings, layers, H] flattened,
    null when the item could not be captured)."""

    schema = CAPTURE_SCHEMA
    job: CaptureJob

    def run(self, batch: pa.Table) -> pa.Table:
        import torch

        from pvdata.activations.capture import capture_encoded
        from pvdata.activations.items import CaptureItem, encode_items

        cols = {name: batch.column(name).to_pylist() for name in batch.column_names}
        items = [
            CaptureItem(s, p, a)
            for s, p, a in zip(cols["source_id"], cols["prompt_text"], cols["answer"], strict=True)
        ]
        job = self.job
        errors: list[str | None] = []
        flat = np.zeros(0, np.float32)
        if items:
            result = capture_encoded(
                self.lm,
                encode_items(self.lm.tokenizer, items),
                layers=job.layers,
                poolings=job.poolings,
                token_budget=job.token_budget,
                max_length=job.max_length,
            )
            if tuple(result.layers) != job.layers or tuple(result.poolings) != job.poolings:
                raise ModelError(
                    f"captured layers {result.layers} / poolings {result.poolings}, expected {job}"
                )
            errors = list(result.errors)
            ok = [i for i, e in enumerate(errors) if e is None]
            stacked = torch.stack([result.values[p][ok] for p in job.poolings], dim=1)  # [n_ok, P, L, H]
            flat = stacked.numpy().astype(np.float32, copy=False).reshape(-1)
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
                "source_id": pa.array(cols["source_id"], pa.string()),
                "error": pa.array(errors, pa.string()),
                "values": values,
            },
            CAPTURE_SCHEMA,
        )


def decode_captured(table: pa.Table, job: CaptureJob) -> CapturedChunk:
    ids = table.column("source_id").to_pylist()
    errors = table.column("error").to_pylist()
    ok = [i for i, e in enumerate(errors) if e is None]
    values = table.column("values").combine_chunks()
    n_p, n_l = len(job.poolings), len(job.layers)
    if ok:
        flat = values.take(pa.array(ok)).flatten().to_numpy(zero_copy_only=False)
        arr = flat.astype(np.float32, copy=False).reshape(len(ok), n_p, n_l, -1)
    else:
        arr = np.zeros((0, n_p, n_l, 0), np.float32)
    return CapturedChunk(
        n_items=len(ids),
        source_ids=[ids[i] for i in ok],
        layers=job.layers,
        poolings=job.poolings,
        values={p: np.ascontiguousarray(arr[:, k]) for k, p in enumerate(job.poolings)},
        errors={ids[i]: str(e) for i, e in enumerate(errors) if e is not None},
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


# ---- the driver ----------------------------------------------------------------------------------------


def _connect(ray: Any, address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ray.init(address=...) in a daemon thread, given up after `timeout` seconds."""
    import threading

    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            ray.init(address=address, log_to_driver=True)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="pvdata-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ConnectionError(f"no Ray cluster answered within {timeout:g} s")
    if "error" in box:
        raise box["error"]


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([e.__context__, e.__cause__, getattr(e, "cause", None)])


WORKER_DEATHS = ("ActorDiedError", "RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError")


def translate_error(exc: BaseException, what: str) -> PvdataError:
    """A user error raised inside a worker comes back as itself; anything else as an ExecutorError that
    names the cause (a dead worker first) in one line."""
    causes = list(_causes(exc))
    for e in causes:
        if isinstance(e, PvdataError) and type(e).__module__.startswith("pvdata"):
            return e
    named = [e for e in causes if str(e).strip() and not isinstance(e, StopIteration | GeneratorExit)]
    deaths = [e for e in named if any(d in type(e).__name__ for d in WORKER_DEATHS)]
    cause = (deaths or named or [exc])[0]
    text = " ".join(str(cause).strip().splitlines()[0].split()) if str(cause).strip() else ""
    text = text if len(text) <= 300 else text[:297] + "..."
    name = type(cause).__name__.removeprefix("RayTaskError(").removesuffix(")")
    return ExecutorError(
        f"the Ray executor failed during {what}: {name}: {text} The chunks committed before the failure "
        "are kept: rerun the same command to resume (--worker-retries sets how often a dead worker is "
        "replaced before a step fails)"
    )


class RayExecutor:
    """Batches on a Ray actor pool (see the module doc). Ray starts on first use, so a rerun whose stages
    all succeeded never contacts the cluster; `close` shuts down a local cluster this executor started."""

    name = "ray"

    def __init__(
        self, config: ExecutorConfig, model: ModelSpec, *, log: Log, facts: ModelFacts | None = None
    ) -> None:
        self.config, self.model, self.log = config, model, log
        self.shape = None if facts is None else (facts.n_layers, facts.hidden_size)
        self._ray: Any = None
        self._owns = False

    # -- cluster -------------------------------------------------------------------------------------------

    def start(self) -> Any:
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        address = self.config.address or os.environ.get("RAY_ADDRESS") or None
        if address and address != "auto":
            check_reachable(address)
        if ray.is_initialized():
            self.log("      ray cluster: the one this process is already connected to")
        else:
            try:
                if address:
                    _connect(ray, address)
                else:
                    ray.init(include_dashboard=False, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                why = " ".join(str(exc).split())
                if address:
                    why += (
                        "; if the cluster uses Ray's token authentication, the driver needs its token "
                        "(~/.ray/auth_token of the head node)"
                    )
                raise ConfigError(unreachable_message(address or "a new local cluster", why)) from exc
            self._owns = True
        self._ray = ray
        local = self._owns and not address
        resources = ray.cluster_resources()
        self._check_resources(resources, strict=local)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the stages report their own progress
        if not local and hasattr(ctx, "wait_for_min_actors_s"):
            ctx.wait_for_min_actors_s = WAIT_FOR_WORKERS_S
        self.log(
            f"      ray cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
            f"{self.config.describe()}"
        )
        return ray

    def _check_resources(self, resources: dict[str, float], *, strict: bool) -> None:
        c = self.config
        need = {"CPU": c.cpus_per_worker * c.num_workers, "GPU": c.gpus_per_worker * c.num_workers}
        short = {k: v for k, v in need.items() if v > resources.get(k, 0.0) + 1e-9}
        if not short:
            return
        have = {k: resources.get(k, 0.0) for k in need}
        message = (
            f"--num-workers {c.num_workers} x (--cpus-per-worker {c.cpus_per_worker:g}, --gpus-per-worker "
            f"{c.gpus_per_worker:g}) needs {need['CPU']:g} CPUs and {need['GPU']:g} GPUs, but the Ray "
            f"cluster has {have['CPU']:g} CPUs and {have['GPU']:g} GPUs: lower --num-workers or the "
            "per-worker resources (fractions are allowed), or add nodes"
        )
        if strict:
            self.close()
            raise ConfigError(message)
        self.log(f"      warning: {message}; waiting up to {WAIT_FOR_WORKERS_S} s for the cluster to grow")

    def close(self) -> None:
        if self._owns and self._ray is not None:
            self._ray.shutdown()
        self._owns = False
        self._ray = None

    # -- mapping -------------------------------------------------------------------------------------------

    def _map(self, tables: list[pa.Table], worker: type, kwargs: dict[str, Any], chunk: int) -> Any:
        ray = self.start()
        c = self.config
        ds = ray.data.from_arrow(tables)  # one block per chunk: a worker's batch is a local chunk
        args: dict[str, Any] = {
            "fn_constructor_kwargs": kwargs,
            "batch_size": chunk,
            "batch_format": "pyarrow",
            # never more actors than chunks: an idle actor would load the model for nothing
            "compute": ray.data.ActorPoolStrategy(size=max(1, min(c.num_workers, len(tables)))),
            "num_cpus": c.cpus_per_worker,
        }
        if c.gpus_per_worker:
            args["num_gpus"] = c.gpus_per_worker
        retries = {"max_restarts": c.worker_retries, "max_task_retries": c.worker_retries}
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing actor options this way, but it is still the only way to bound
            # the restarts (Ray Data's default is to restart and retry forever)
            warnings.simplefilter("ignore")
            try:
                return ds.map_batches(worker, **args, **retries)
            except TypeError:
                self.log("      ray: this Ray takes no max_restarts in map_batches; Ray Data's retries apply")
                return ds.map_batches(worker, **args)

    def _results(self, ds: Any, what: str) -> Iterator[pa.Table]:
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                raise_failure(table)
                if table.num_rows:
                    yield table
        except PvdataError:
            raise
        except Exception as exc:
            raise translate_error(exc, what) from exc

    def _chunks(self, items: Sequence[Any], chunk: int) -> list[Sequence[Any]]:
        return [items[s : s + chunk] for s in range(0, len(items), chunk)]

    # -- the steps -----------------------------------------------------------------------------------------

    def score(self, job: ScoreJob, samples: Sequence[Any], *, chunk: int) -> Iterator[ScoredChunk]:
        if not samples:
            return
        tables = [encode_score_inputs(part) for part in self._chunks(samples, chunk)]
        ds = self._map(tables, ScoreWorker, {"model": self.model, "job": job, "shape": self.shape}, chunk)
        by_id = {s.sample_id: s for s in samples}
        for table in self._results(ds, "projections"):
            yield decode_scored(table, by_id)

    def capture(self, job: CaptureJob, items: Sequence[Any], *, chunk: int) -> Iterator[CapturedChunk]:
        if not items:
            return
        tables = [encode_capture_items(part) for part in self._chunks(items, chunk)]
        ds = self._map(tables, CaptureWorker, {"model": self.model, "job": job, "shape": self.shape}, chunk)
        for table in self._results(ds, "activation capture"):
            yield decode_captured(table, job)

    def generate(
        self, job: GenerateJob, requests: Sequence[Any], params: Any, *, chunk: int
    ) -> Iterator[list[Any]]:
        from pvdata.generation.backends import backend_kind
        from pvdata.generation.base import GenerationResult

        if not requests:
            return
        tables = [
            pa.table(
                {
                    "index": pa.array(range(start, start + len(part)), pa.int64()),
                    "messages": [json.dumps(list(r.messages), ensure_ascii=False) for r in part],
                }
            )
            for start, part in ((s, requests[s : s + chunk]) for s in range(0, len(requests), chunk))
        ]
        kwargs = {"model": self.model, "job": job, "params": params, "shape": self.shape}
        ds = self._map(tables, GenerateWorker, kwargs, chunk)
        name = backend_kind(job.backend)
        for table in self._results(ds, "generation"):
            group = []
            for index, results in zip(
                table.column("index").to_pylist(), table.column("results").to_pylist(), strict=True
            ):
                for r in results:
                    group.append(
                        GenerationResult(
                            request_index=index,
                            sample_index=r["sample_index"],
                            text=r["text"],
                            n_tokens=r["n_tokens"],
                            finish_reason=r["finish_reason"],
                            backend=name,
                            request_id=requests[index].request_id,
                            error=r["error"],
                        )
                    )
            yield group

    def generation_backend(self, job: GenerateJob) -> Any:
        from pvdata.generation.backends import backend_kind, make_backend

        kind = backend_kind(job.backend)
        if kind == "openai":  # a server does the work; the requests go out from the driver
            return make_backend(job.backend, model=self.model.name, dtype=job.dtype)
        if kind == "vllm":
            self._check_vllm()
        return RayGenerationBackend(self, job)

    def _check_vllm(self) -> None:
        ray = self.start()

        def has_vllm() -> bool:
            import importlib.util

            return importlib.util.find_spec("vllm") is not None

        probe = ray.remote(num_cpus=0)(has_vllm)
        if not ray.get(probe.remote(), timeout=300):
            raise ConfigError(
                "--backend vllm with --executor ray: vLLM is not installed where the Ray workers run; "
                "install it there (pip install 'pvdata[vllm]', the same environment on every node) or use "
                "--backend hf"
            )


class RayGenerationBackend:
    """A GenerationBackend whose generation runs on the Ray workers. Its identity (name, model_id,
    adapter) is the one the backend inside the workers has, so generation ids are the local ones; the
    prompt text is rendered here with the model's tokenizer (no weights are loaded on the driver)."""

    def __init__(self, executor: RayExecutor, job: GenerateJob) -> None:
        from pvdata.generation.backends import backend_kind

        self.executor, self.job = executor, job
        self.name = backend_kind(job.backend)
        self.model_id = executor.model.name
        self.adapter = executor.model.resolved_adapter()
        self._tokenizer: Any = None

    def render_prompt(self, request: Any) -> str:
        from pvdata.chat import render_prompt

        if self._tokenizer is None:
            self._tokenizer = self.executor.model.tokenizer(prefer_adapter=self.name == "hf")
        return render_prompt(self._tokenizer, request.messages)

    def generate(self, requests: Sequence[Any], params: Any) -> list[Any]:
        out = [
            r for group in self.generate_stream(requests, params, chunk=max(1, len(requests))) for r in group
        ]
        return sorted(out, key=lambda r: (r.request_index, r.sample_index))

    def generate_stream(self, requests: Sequence[Any], params: Any, *, chunk: int) -> Iterator[list[Any]]:
        yield from self.executor.generate(self.job, requests, params, chunk=chunk)

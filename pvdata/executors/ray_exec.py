"""The Ray executor: the heavy batch steps on an actor pool of a Ray cluster, through Ray Data.

What runs where:

- the driver (the `pvdata` process) reads and validates the input, asks the warehouse what each run has
  committed, and builds a Ray Data dataset of the PENDING work items only, one block per chunk
  (`--chunk-size` items), so the batches are the local executor's chunks;
- `map_batches` runs a callable class (pvdata.executors.ray_workers) on a fixed pool of `--num-workers`
  actors (`ActorPoolStrategy`), each reserving `--cpus-per-worker` CPUs and `--gpus-per-worker` GPUs and
  loading the model ONCE in its constructor; a call turns one chunk (an Arrow table) into one Arrow table
  with ONE ROW PER ITEM that carries all of that item's output (a list column), so however Ray Data
  slices its output blocks, an item's rows are never split;
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
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pvdata.errors import ConfigError, PvdataError
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
from pvdata.executors.ray_workers import FAILURE, CaptureWorker, GenerateWorker, ScoreWorker

# re-exported from where they were (tests kill workers at KILL_POINT and round-trip the score inputs)
from pvdata.executors.ray_workers import KILL_POINT as KILL_POINT
from pvdata.executors.ray_workers import decode_score_inputs as decode_score_inputs
from pvdata.pipelines.progress import Log

WAIT_FOR_WORKERS_S = 600  # a remote cluster that cannot place the workers fails after this, not never
CONNECT_TIMEOUT_S = 60.0  # ray.init to an address that accepts TCP but is no Ray cluster hangs for good


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ray_missing_error() from exc
    return ray


# ---- the wire format, driver side ---------------------------------------------------------------------


def raise_failure(table: pa.Table, what: str) -> None:
    """Raise the error a worker returned: a user error (PvdataError) as its own class with its own
    message, anything else as an ExecutorError that names its type and message."""
    if FAILURE not in table.column_names or table.column(FAILURE).null_count == len(table):
        return
    info = json.loads(next(f for f in table.column(FAILURE).to_pylist() if f))
    try:
        import importlib

        found = getattr(importlib.import_module(info["module"]), info["type"])
    except (ImportError, AttributeError):
        found = None
    if isinstance(found, type) and issubclass(found, PvdataError):
        exc = found.__new__(found)  # some PvdataErrors take other constructor arguments; the message is all
        exc.args = (info["message"],)
        raise exc
    if found is None and info["module"].startswith("pvdata"):  # a PvdataError of another pvdata version
        raise ExecutorError(info["message"])
    name = info["type"] if info["module"] == "builtins" else f"{info['module']}.{info['type']}"
    raise ExecutorError(failure_message(what, name, one_line(info["message"]), in_worker=True))


def one_line(text: str) -> str:
    text = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return text if len(text) <= 300 else text[:297] + "..."


def failure_message(what: str, name: str, text: str, *, in_worker: bool = False) -> str:
    """One line: the step, the cause, and that a rerun resumes after the committed chunks."""
    where = " (raised inside a Ray worker; its traceback is in the worker's log)" if in_worker else ""
    hint = (
        ""
        if in_worker
        else " (--worker-retries sets how often a dead worker is replaced before a step fails)"
    )
    return (
        f"the Ray executor failed during {what}: {name}: {text}{where} The chunks committed before the "
        f"failure are kept: rerun the same command to resume{hint}"
    )


def encode_score_inputs(samples: Sequence[Any]) -> pa.Table:
    return pa.table(
        {
            "sample_id": [s.sample_id for s in samples],
            "prompt": [json.dumps([dict(m) for m in s.prompt], ensure_ascii=False) for s in samples],
            "answer": [s.answer for s in samples],
            "base_answer": pa.array([s.base_answer for s in samples], pa.string()),
            "base_id": pa.array([s.base_id for s in samples], pa.string()),
            "more_bases": pa.array([json.dumps(list(s.more_bases)) for s in samples], pa.string()),
            "rejected": pa.array([s.rejected for s in samples], pa.string()),
        }
    )


def decode_scored(table: pa.Table, by_id: dict[str, Any]) -> ScoredChunk:
    from pvdata.screening.scoring import ScoredBatch

    samples = [by_id[s] for s in table.column("sample_id").to_pylist()]
    proj = [r for rows in table.column("projections").to_pylist() for r in rows]
    scores = [r for rows in table.column("scores").to_pylist() for r in rows]
    errors = {e["source_id"]: e["error"] for rows in table.column("errors").to_pylist() for e in rows}
    return ScoredChunk(samples, ScoredBatch(proj, scores, errors))


def encode_capture_items(items: Sequence[Any]) -> pa.Table:
    return pa.table(
        {
            "source_id": [i.source_id for i in items],
            "prompt_text": [i.prompt_text for i in items],
            "answer": [i.answer for i in items],
        }
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
    name = type(cause).__name__.removeprefix("RayTaskError(").removesuffix(")")
    return ExecutorError(failure_message(what, name, one_line(str(cause))))


class RayExecutor:
    """Batches on a Ray actor pool (see the module doc). Ray starts on first use, so a rerun whose stages
    all succeeded never contacts the cluster; `close` shuts down a local cluster this executor started."""

    name = "ray"

    def __init__(
        self,
        config: ExecutorConfig,
        model: ModelSpec,
        *,
        log: Log,
        facts: ModelFacts | None = None,
        prefetch: bool = True,
    ) -> None:
        self.config, self.model, self.log = config, model, log
        self.prefetch = prefetch  # False: the workers prepare inline (same results; for comparison)
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
                raise_failure(table, what)
                if table.num_rows:
                    yield table
        except PvdataError:
            raise
        except Exception as exc:
            raise translate_error(exc, what) from exc

    def _chunks(self, items: Sequence[Any], chunk: int) -> list[Sequence[Any]]:
        return [items[s : s + chunk] for s in range(0, len(items), chunk)]

    def _model_kwargs(self, job: Any) -> dict[str, Any]:
        """The constructor arguments of a score or capture actor."""
        return {"model": self.model, "job": job, "shape": self.shape, "prefetch": self.prefetch}

    # -- the steps -----------------------------------------------------------------------------------------

    def score(self, job: ScoreJob, samples: Sequence[Any], *, chunk: int) -> Iterator[ScoredChunk]:
        if not samples:
            return
        tables = [encode_score_inputs(part) for part in self._chunks(samples, chunk)]
        ds = self._map(tables, ScoreWorker, self._model_kwargs(job), chunk)
        by_id = {s.sample_id: s for s in samples}
        for table in self._results(ds, "projections"):
            yield decode_scored(table, by_id)

    def capture(self, job: CaptureJob, items: Sequence[Any], *, chunk: int) -> Iterator[CapturedChunk]:
        if not items:
            return
        tables = [encode_capture_items(part) for part in self._chunks(items, chunk)]
        ds = self._map(tables, CaptureWorker, self._model_kwargs(job), chunk)
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
        from pvdata.generation.backends import vllm_installed

        ray = self.start()
        probe = ray.remote(num_cpus=0)(vllm_installed)
        if not ray.get(probe.remote(), timeout=300):
            raise ConfigError(
                "--backend vllm with --executor ray (or auto, which picks vllm when it is installed on the "
                "driver and the workers reserve GPUs): vLLM is not installed where the Ray workers run; "
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

"""What an executor is: the heavy batch steps of a pipeline, run in this process or on a cluster.

A pipeline stage decides WHAT to compute (it reads the data, asks the warehouse what a run already
committed, and keeps only the pending items); an executor decides WHERE the batches run. Three steps are
heavy and pure (a loaded model and a batch in, rows out), so they are what an executor maps:

- `score`: `pvdata.screening.scoring.score_batch` (projections and screening scores);
- `capture`: activation capture of (source_id, prompt text, answer) items (extraction);
- generation: `generation_backend(job)` gives a `GenerationBackend`; `generate_stream` runs it.

Every step yields its results in groups: each group holds every row of the items it covers, so the stage
writes a group with one writer call and commits it (exactly-once resume and atomic files are the
stage's, unchanged). Groups may arrive in any order; the rows are the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pvdata.errors import ConfigError, PvdataError

if TYPE_CHECKING:
    import numpy as np

EXECUTORS: tuple[str, ...] = ("local", "ray")
RAY_INSTALL = "pip install 'pvdata[ray]'"
RAY_DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
# The config fields that say where a job runs, not what it computes: they never enter a run's config,
# so a run started with one executor resumes (or is skipped as done) under another.
EXECUTION_FIELDS: tuple[str, ...] = (
    "executor",
    "ray_address",
    "num_workers",
    "gpus_per_worker",
    "cpus_per_worker",
    "worker_retries",
)


class ExecutorError(PvdataError):
    """A distributed step failed (a worker kept dying, the cluster went away); committed work is kept."""


def ray_available() -> bool:
    """Whether `import ray` works here (the driver; workers must have the same environment)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def ray_missing_error(what: str = "--executor ray") -> ConfigError:
    return ConfigError(
        f"{what} needs Ray (with Ray Data), which is not installed: {RAY_INSTALL} (in a checkout: "
        ".venv/bin/python -m pip install -c constraints.txt -e '.[ray]'), or use --executor local"
    )


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the heavy steps run: `local` (this process) or `ray` (an actor pool on a Ray cluster).

    address: a running cluster (`ray start --head` prints it; `auto` = the one on this machine); None
    starts a local cluster (or uses $RAY_ADDRESS). num_workers actors, each holding the model once,
    with cpus_per_worker CPUs and gpus_per_worker GPUs (fractions share a GPU). worker_retries: how often
    a dead worker is restarted and its batch retried before the stage fails (a rerun then resumes).
    """

    name: str = "local"
    address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    worker_retries: int = 3

    def check(self, device: str = "auto") -> None:
        """Flag-level checks (no cluster is contacted, no model loads)."""
        if self.name not in EXECUTORS:
            raise ConfigError(
                f"--executor {self.name!r} is not available: valid executors are {', '.join(EXECUTORS)}"
            )
        if self.name == "local":
            defaults = ExecutorConfig()
            given = [
                flag
                for flag, attr in (
                    ("--ray-address", "address"),
                    ("--num-workers", "num_workers"),
                    ("--gpus-per-worker", "gpus_per_worker"),
                    ("--cpus-per-worker", "cpus_per_worker"),
                    ("--worker-retries", "worker_retries"),
                )
                if getattr(self, attr) != getattr(defaults, attr)
            ]
            if given:
                raise ConfigError(
                    f"{', '.join(given)} only apply to --executor ray: add --executor ray or drop them"
                )
            return
        n = self.num_workers
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"--num-workers {n!r} must be an integer >= 1")
        for flag, value in (
            ("--gpus-per-worker", self.gpus_per_worker),
            ("--cpus-per-worker", self.cpus_per_worker),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"{flag} {value!r} must be a number >= 0 (fractions share a device)")
        if self.gpus_per_worker == 0 and self.cpus_per_worker == 0:
            raise ConfigError(
                "--cpus-per-worker 0 needs --gpus-per-worker > 0: a worker must reserve something"
            )
        r = self.worker_retries
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ConfigError(f"--worker-retries {r!r} must be an integer >= 0")
        if self.address is not None and self.address != "auto":
            parse_address(self.address)
        if device not in RAY_DEVICES:
            raise ConfigError(
                f"--device {device} with --executor ray: each worker sees only the GPUs Ray gives it, as "
                f"cuda; valid devices are {', '.join(RAY_DEVICES)} (the GPUs come from --gpus-per-worker)"
            )
        if device == "cuda" and self.gpus_per_worker == 0:
            raise ConfigError(
                "--device cuda with --executor ray needs --gpus-per-worker > 0: Ray hides the GPUs from "
                "workers that reserved none"
            )
        if device == "cpu" and self.gpus_per_worker > 0:
            raise ConfigError(
                f"--gpus-per-worker {self.gpus_per_worker:g} with --device cpu reserves GPUs the workers "
                "would not use: drop one of the two"
            )
        if not ray_available():
            raise ray_missing_error()

    def worker_device(self, device: str) -> str:
        """The device the model runs on: for ray, that of the workers (cuda when they reserve GPUs)."""
        if self.name == "ray":
            if device == "auto":
                return "cuda" if self.gpus_per_worker > 0 else "cpu"
            return device
        from pvdata.models.loading import resolve_device

        return resolve_device(device)

    def describe(self) -> str:
        if self.name == "local":
            return "this process"
        where = self.address or "a local Ray cluster"
        gpus = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return f"{self.num_workers} Ray worker(s) x ({self.cpus_per_worker:g} CPU{gpus}) on {where}"

    def check_cluster(self) -> None:
        """The network check of --ray-address (a TCP connect), before any run starts or model loads:
        ray.init itself retries an unreachable address for many minutes."""
        if self.name == "ray" and self.address not in (None, "auto"):
            check_reachable(str(self.address))


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or ray://HOST:PORT -> (host, port); ConfigError otherwise."""
    target = address.strip().removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, as `ray start --head` "
            "prints it; ray://HOST:10001 for Ray Client) or auto"
        )
    return host, int(port)


def unreachable_message(address: str, why: str) -> str:
    return (
        f"cannot reach the Ray cluster at {address} ({why}): start one with `ray start --head` on the head "
        "node and pass the address it prints, use --ray-address auto for a cluster started on this machine, "
        "or leave out --ray-address to start a local cluster"
    )


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to the address (no Ray involved); ConfigError naming the fix when it fails."""
    import socket

    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(unreachable_message(address, str(exc))) from None


def executor_config(cfg: Any) -> ExecutorConfig:
    """The ExecutorConfig of a config with the flat EXECUTION_FIELDS (ScreenConfig, ExtractConfig)."""
    return ExecutorConfig(
        name=cfg.executor,
        address=cfg.ray_address,
        num_workers=cfg.num_workers,
        gpus_per_worker=cfg.gpus_per_worker,
        cpus_per_worker=cfg.cpus_per_worker,
        worker_retries=cfg.worker_retries,
    )


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the model: `load_model(name, dtype=, device=, layers_path=, adapter=)`."""

    name: str
    dtype: str = "auto"
    device: str = "auto"
    layers_path: str | None = None
    adapter: str | None = None

    def load(self) -> Any:
        from pvdata.models import load_model

        return load_model(
            self.name,
            dtype=self.dtype,
            device=self.device,
            layers_path=self.layers_path,
            adapter=self.adapter,
        )

    def resolved_adapter(self) -> str | None:
        """The adapter a loaded model reports (an adapter folder given as the model counts)."""
        from pvdata.models.loading import resolve_model_source

        return self.adapter or resolve_model_source(self.name)[1]

    def tokenizer(self, *, prefer_adapter: bool = True) -> Any:
        """The tokenizer `load_model` would give (the adapter folder's first; the vLLM backend uses the
        base model's: prefer_adapter=False), without the weights: renders prompts on the driver."""
        from transformers import AutoTokenizer

        from pvdata.errors import ModelError
        from pvdata.models.loading import prepare_tokenizer, resolve_model_source

        source, implied = resolve_model_source(self.name)
        adapter = self.adapter or implied
        try:
            tok = AutoTokenizer.from_pretrained((adapter if prefer_adapter else None) or source)
        except (OSError, ValueError):
            try:
                tok = AutoTokenizer.from_pretrained(source)
            except OSError as exc:
                raise ModelError(f"cannot load the tokenizer of {self.name!r}: {exc}") from exc
        return prepare_tokenizer(tok)


def worker_model(name: str, dtype: str, device: str, config: ExecutorConfig, **kw: Any) -> ModelSpec:
    """The ModelSpec workers load, with device and dtype resolved where the model will run, so what a
    run records (its dtype) is what the workers used, whatever the driver's own hardware."""
    from pvdata.models.loading import resolve_dtype

    dev = config.worker_device(device)
    return ModelSpec(name, dtype=str(resolve_dtype(dtype, dev)).removeprefix("torch."), device=dev, **kw)


@dataclass(frozen=True)
class ModelFacts:
    """What a stage needs to know about the model without its weights (built on the meta device)."""

    layers: Any  # LayerInfo of a meta-device copy: n_layers, check_layer
    hidden_size: int
    dtype: str  # as str(lm.dtype) prints it, e.g. torch.float32

    @property
    def n_layers(self) -> int:
        return int(self.layers.n_layers)

    @classmethod
    def of(cls, lm: Any) -> ModelFacts:
        return cls(lm.layers, int(lm.hidden_size), str(lm.dtype))


def model_facts(spec: ModelSpec) -> ModelFacts:
    """Layers and width from the config alone: the model is built on torch's meta device (no memory, no
    weights), so a driver that only coordinates workers never loads a multi-GB model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from pvdata.errors import ModelError
    from pvdata.models.layers import find_layers, hidden_size
    from pvdata.models.loading import resolve_model_source

    source, _ = resolve_model_source(spec.name)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config of model {spec.name!r}: {exc}") from exc
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    from pvdata.models.loading import resolve_dtype

    layers = find_layers(model, spec.layers_path)
    return ModelFacts(layers, hidden_size(model), str(resolve_dtype(spec.dtype, spec.device)))


@dataclass(frozen=True)
class ScoreJob:
    """`score_batch(lm, samples, vectors, layers, methods, token_budget=, max_length=)` for every chunk."""

    vectors: tuple[Any, ...]
    layers: Sequence[int] | Mapping[str, Sequence[int]]
    methods: tuple[str, ...]
    token_budget: int | None = None
    max_length: int | None = None  # longer samples are skipped with a reason (default: the model's context)
    compile: str | None = None  # a torch.compile mode for the scored blocks (pvdata.models.compiled)


@dataclass
class ScoredChunk:
    """One group of scored samples: the inputs it covers and score_batch's output for them."""

    samples: list[Any]  # ScoreInput
    result: Any  # ScoredBatch


@dataclass(frozen=True)
class CaptureJob:
    """Pooled activations of (prompt text, answer) items at these layers and poolings."""

    layers: tuple[int, ...]
    poolings: tuple[str, ...]
    token_budget: int | None = None
    max_length: int | None = None  # longer items are skipped with a reason (default: the model's context)
    compile: str | None = None  # a torch.compile mode for the captured blocks (pvdata.models.compiled)

    @classmethod
    def of(
        cls,
        layers: Sequence[int],
        poolings: Sequence[str],
        token_budget: int | None = None,
        max_length: int | None = None,
        compile: str | None = None,
    ) -> CaptureJob:
        """Normalised as capture_encoded returns them: sorted distinct layers, distinct poolings in order."""
        layers_t = tuple(sorted({int(x) for x in layers}))
        return cls(layers_t, tuple(dict.fromkeys(poolings)), token_budget, max_length, compile)


@dataclass
class CapturedChunk:
    """Captured items of one group: values[pooling] is [len(source_ids), len(layers), H] float32 for the
    items captured without error; errors: source_id -> why an item was not captured."""

    n_items: int
    source_ids: list[str]
    layers: tuple[int, ...]
    poolings: tuple[str, ...]
    values: dict[str, np.ndarray]
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_result(cls, items: Sequence[Any], result: Any) -> CapturedChunk:
        """From a CaptureResult of `items` (in order)."""
        import numpy as np

        ok = [i for i, err in enumerate(result.errors) if err is None]
        values = {p: result.values[p][ok].numpy().astype(np.float32, copy=False) for p in result.poolings}
        errors = {items[i].source_id: str(e) for i, e in enumerate(result.errors) if e is not None}
        return cls(
            len(items), [items[i].source_id for i in ok], result.layers, result.poolings, values, errors
        )


@dataclass(frozen=True)
class GenerateJob:
    """Generation with a backend spec (hf | vllm | openai:MODEL). dtype is the user's (vLLM resolves
    auto itself); token_budget is the HF backend's."""

    backend: str = "hf"
    token_budget: int | None = None
    dtype: str = "auto"


class Executor(Protocol):
    """Runs the heavy batch steps; results come back in groups the caller commits one by one."""

    name: str

    def score(self, job: ScoreJob, samples: Sequence[Any], *, chunk: int) -> Iterator[ScoredChunk]: ...

    def capture(self, job: CaptureJob, items: Sequence[Any], *, chunk: int) -> Iterator[CapturedChunk]: ...

    def generation_backend(self, job: GenerateJob) -> Any: ...

    def close(self) -> None: ...


def generate_stream(backend: Any, requests: Sequence[Any], params: Any, *, chunk: int) -> Iterator[list[Any]]:
    """GenerationResults in groups: every sample of a request in one group, request_index into `requests`.

    A backend with its own `generate_stream` (the Ray executor's) runs chunks in parallel and yields them
    as they finish; any other backend generates chunk after chunk in this process.
    """
    stream = getattr(backend, "generate_stream", None)
    if callable(stream):
        yield from stream(requests, params, chunk=chunk)
        return
    for start in range(0, len(requests), chunk):
        results = backend.generate(list(requests[start : start + chunk]), params)
        yield [dataclasses.replace(r, request_index=r.request_index + start) for r in results]

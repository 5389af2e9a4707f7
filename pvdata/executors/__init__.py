"""Executors: where the heavy batch steps of `pvdata screen` and `pvdata extract` run.

    >>> executor = make_executor(ExecutorConfig("ray", num_workers=4, gpus_per_worker=1), model, log=print)
    >>> for chunk in executor.score(ScoreJob(vectors, layers, methods), pending, chunk=64): ...

`local` runs them in this process (the default); `ray` on an actor pool of a Ray cluster through Ray
Data (pvdata.executors.ray_exec; needs the `ray` extra). See docs/SCALE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvdata.executors.base import (
    EXECUTION_FIELDS,
    EXECUTORS,
    RAY_INSTALL,
    CapturedChunk,
    CaptureJob,
    Executor,
    ExecutorConfig,
    ExecutorError,
    GenerateJob,
    ModelFacts,
    ModelSpec,
    ScoredChunk,
    ScoreJob,
    check_reachable,
    executor_config,
    generate_stream,
    model_facts,
    worker_model,
)
from pvdata.executors.local import LocalExecutor


def make_executor(
    config: ExecutorConfig,
    model: ModelSpec,
    *,
    lm: Any = None,
    facts: ModelFacts | None = None,
    log: Callable[[str], None] = print,
    prefetch: bool = True,
) -> Executor:
    """The executor a config names. `lm` (a loaded model or a loader) serves the local one; the ray one
    loads `model` in each worker and checks it against `facts` (layers and width read by the driver).
    `prefetch`: host preparation ahead of the device, in this process or in each worker (False: inline,
    the same results)."""
    if config.name == "local":
        return LocalExecutor(lm, model, prefetch=prefetch)
    from pvdata.executors.ray_exec import RayExecutor

    return RayExecutor(config, model, log=log, facts=facts, prefetch=prefetch)


__all__ = [
    "EXECUTION_FIELDS",
    "EXECUTORS",
    "RAY_INSTALL",
    "CaptureJob",
    "CapturedChunk",
    "Executor",
    "ExecutorConfig",
    "ExecutorError",
    "GenerateJob",
    "LocalExecutor",
    "ModelFacts",
    "ModelSpec",
    "ScoreJob",
    "ScoredChunk",
    "check_reachable",
    "executor_config",
    "generate_stream",
    "make_executor",
    "model_facts",
    "worker_model",
]

"""Run a checked pipeline file: steps in order, one model load per (model, adapter, dtype, device)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from pvdata.pipelines.spec import PipelineSpec, Step

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ModelCache:
    """Models shared by the steps of one pipeline run, so SmolLM2 loads once, not once per step."""

    def __init__(self, log: Log) -> None:
        self._models: dict[tuple[str, str | None, str, str], Any] = {}
        self._log = log

    def get(self, model: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto") -> Any:
        from pvdata.models import load_model

        key = (model, adapter, dtype, device)
        if key not in self._models:
            self._log(f"loading {model}" + (f" with adapter {adapter}" if adapter else ""))
            self._models[key] = load_model(model, dtype=dtype, device=device, adapter=adapter)
        return self._models[key]


def _resolve_refs(step: Step, vectors: dict[str, str]) -> Any:
    ref = getattr(step.config, "vector", None)
    if isinstance(ref, str) and ref.startswith("$"):
        return dataclasses.replace(step.config, vector=vectors[ref[1:]])
    return step.config


def _run_step(
    step: Step, cfg: Any, warehouse: str, models: ModelCache, force: bool, log: Log
) -> tuple[list[str], str | None]:
    """(summary lines, vector id made by the step or None)."""
    adapter = getattr(cfg, "adapter", None)
    lm = models.get(cfg.model, adapter, getattr(cfg, "dtype", "auto"), getattr(cfg, "device", "auto"))
    if step.kind == "extract":
        from pvdata.pipelines import extract

        result = extract.run_extract(cfg, warehouse, force=force, log=log, lm=lm)
        vector = next((v for v in result.vectors if v.pooling == "response_avg"), result.vectors[0])
        return extract.summary_lines(result, cfg, lm.n_layers), vector.vector_id
    if step.kind == "evaluate":
        from pvdata.pipelines import evaluate

        ev = evaluate.run_evaluate(cfg, warehouse, force=force, log=log, lm=lm)
        return evaluate.summary_lines(ev, cfg), None
    if step.kind == "monitor":
        from pvdata.pipelines import monitor

        mon = monitor.run_monitor(cfg, warehouse, force=force, log=log, lm=lm)
        return monitor.summary_lines(mon, cfg), None
    raise AssertionError(f"step kind {step.kind} has no runner")  # spec.step_kinds and this agree


def run_pipeline(
    spec: PipelineSpec, warehouse: str, *, force: bool = False, log: Log = _stderr, out: Log = print
) -> list[str]:
    """Run every step; returns the vector id each vector-making step produced, in order."""
    models = ModelCache(log)
    vectors: dict[str, str] = {}
    made: list[str] = []
    for i, step in enumerate(spec.steps):
        out(f"== step {i + 1}/{len(spec.steps)}: {step.kind} ({step.id})")
        cfg = _resolve_refs(step, vectors)
        lines, vector_id = _run_step(step, cfg, warehouse, models, force, log)
        out("\n".join(lines))
        if vector_id is not None:
            vectors[step.id] = vector_id
            made.append(vector_id)
    return made

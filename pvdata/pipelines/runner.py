"""Run a checked pipeline file: steps in order, one model load per (model, adapter, dtype, device).

A train step loads its own copy (it wraps the model in a LoRA adapter), so the shared models stay clean.
"""

from __future__ import annotations

from typing import Any

from pvdata.pipelines.progress import Log, stderr_log
from pvdata.pipelines.spec import PipelineSpec, Step, resolve_refs, step_kinds


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


def _run_step(
    step: Step, cfg: Any, warehouse: str, models: ModelCache, force: bool, log: Log
) -> tuple[list[str], str | None]:
    """(summary lines, what the step made for later `$ID` references: a vector id, an adapter, or None)."""
    if step.kind == "train":
        from pvdata.training.pipeline import run_train
        from pvdata.training.pipeline import summary_lines as train_lines

        trained = run_train(cfg, warehouse, force=force, log=log, progress=False)
        return train_lines(trained), str(trained.adapter) if trained.adapter else None
    if step.kind == "experiment":
        from pvdata.experiments import step as experiment_step

        return experiment_step.run(cfg, warehouse, log), None
    if step.kind == "screen":
        from pvdata.pipelines import screen

        sc = cfg.config
        lm = models.get(sc.model, None, sc.dtype, sc.device)
        screened = screen.run_screen(sc, warehouse, out=cfg.out, force=force, log=log, lm=lm)
        return screen.summary_lines(screened, sc), None
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
    spec: PipelineSpec, warehouse: str, *, force: bool = False, log: Log = stderr_log, out: Log = print
) -> list[str]:
    """Run every step; returns what each vector- or adapter-making step produced, in order."""
    models = ModelCache(log)
    kinds = step_kinds()
    by_id: dict[str, str] = {}
    made: list[str] = []
    for i, step in enumerate(spec.steps):
        out(f"== step {i + 1}/{len(spec.steps)}: {step.kind} ({step.id})")
        cfg = resolve_refs(step.config, kinds[step.kind].refs, by_id)
        lines, product = _run_step(step, cfg, warehouse, models, force, log)
        out("\n".join(lines))
        if product is not None:
            by_id[step.id] = product
            made.append(product)
    return made

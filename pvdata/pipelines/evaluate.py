"""`pvdata evaluate`: judged answers to a trait's evaluation questions, unsteered, with an adapter, or
steered over a coef x layer grid, with a summary per cell and a layer choice (ALGORITHMS.md section 6).

Every cell is its own generate run (the steering JSON recorded on each row) plus one judge run per
metric; the `evaluate` run that closes the job lists them and stores the summary table in its stats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pvdata.errors import ConfigError
from pvdata.pipelines.progress import Log, stderr_log


@dataclass
class EvaluateConfig:
    trait: str
    model: str
    adapter: str | None = None
    vector: str | None = None  # vector file, warehouse id (prefix), or with layers: the latest of the trait
    coefs: list[float] = field(default_factory=lambda: [0.0])
    layers: list[int] = field(default_factory=list)
    positions: str = "response"
    judge: str = "none"
    questions: int = 20
    n_per_question: int = 10
    temperature: float | None = None
    max_new_tokens: int = 1000
    seed: int = 0
    coherence_floor: float = 50.0
    dtype: str = "auto"
    device: str = "auto"
    token_budget: int | None = None


@dataclass
class Cell:
    layer: int | None
    coef: float | None
    generate_run: str
    judge_runs: dict[str, str]
    trait_mean: float | None = None
    coherence_mean: float | None = None
    n: int = 0
    n_valid: int = 0
    null_rate: float = 0.0


@dataclass
class EvaluateResult:
    run_id: str
    cells: list[Cell]
    best: Cell | None
    message: str = ""


def run_evaluate(
    cfg: EvaluateConfig,
    warehouse: str,
    *,
    force: bool = False,
    log: Log = stderr_log,
    lm: Any = None,
    judge: Any = None,
) -> EvaluateResult:
    from pvdata.generation.base import GenerationRequest, SamplingParams
    from pvdata.generation.hf import HFBackend
    from pvdata.judge import make_judge
    from pvdata.judge.pipeline import judge_generation_run
    from pvdata.judge.rubrics import COHERENCE
    from pvdata.models import load_model
    from pvdata.pipelines.generate_stage import GenItem, generate_into
    from pvdata.steering import SteeringSpec
    from pvdata.traits import load_trait
    from pvdata.vectors.store import resolve_vector
    from pvdata.warehouse import Warehouse

    trait = load_trait(cfg.trait)
    questions = trait.split_questions("eval")
    if not 1 <= cfg.questions <= len(questions):
        raise ConfigError(
            f"--questions {cfg.questions}: trait {trait.name} has 1..{len(questions)} eval questions"
        )
    wh = Warehouse(warehouse)
    if cfg.vector and not cfg.layers:
        raise ConfigError("--vector needs --layers (the layers to steer, one cell per layer x coef)")
    vector = (
        resolve_vector(wh, cfg.vector, trait=trait.name, model_id=cfg.model)
        if cfg.vector or cfg.layers
        else None
    )
    if lm is None:
        log(f"loading {cfg.model}" + (f" with adapter {cfg.adapter}" if cfg.adapter else ""))
        lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, adapter=cfg.adapter)
    if vector is not None:
        vector.check_compatible(lm.n_layers, lm.hidden_size, lm.model_id)
    params = SamplingParams(
        n=cfg.n_per_question, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
    )
    items = [
        GenItem(
            GenerationRequest.from_question(q),
            {
                "trait": trait.name,
                "split": "eval",
                "polarity": "none",
                "question_id": f"{trait.name}/eval/{i}",
            },
        )
        for i, q in enumerate(questions[: cfg.questions])
    ]
    grid: list[tuple[int | None, float | None]] = (
        [(layer, coef) for layer in cfg.layers for coef in cfg.coefs]
        if vector is not None
        else [(None, None)]
    )
    judge_obj = judge or (make_judge(cfg.judge) if cfg.judge != "none" else None)
    cells: list[Cell] = []
    for k, (layer, coef) in enumerate(grid):
        spec = None
        if vector is not None and layer is not None and coef is not None:
            spec = SteeringSpec(
                layers=(layer,),
                coef=coef,
                positions=cfg.positions,  # type: ignore[arg-type]
                vector_id=vector.vector_id,
            )
        backend = HFBackend(lm, steering=spec, vector=vector if spec else None, token_budget=cfg.token_budget)
        steering_json = backend.steering.to_json() if spec else None
        config = {
            "stage": "evaluate.generate",
            "trait_version": trait.trait_version,
            "model": cfg.model,
            "adapter": cfg.adapter,
            "questions": cfg.questions,
            "sampling": params.to_json(),
            "steering": steering_json,
        }
        with wh.run("generate", config, model_id=cfg.model, force=force) as run:
            label = "unsteered" if spec is None else f"layer {layer} coef {coef:g}"
            if run.skipped:
                log(f"[{k + 1}/{len(grid)}] {label}: {run.message}")
            else:
                log(f"[{k + 1}/{len(grid)}] {label}: generating {len(items)} x {params.n} -> {run.run_id}")
                run.stats.update(generate_into(run, backend, items, params, steering=steering_json))
        cell = Cell(layer, coef, run.run_id, {})
        if judge_obj is not None:
            for metric, rubric in ((trait.name, trait.rubric), ("coherence", COHERENCE)):
                summary = judge_generation_run(
                    warehouse, run.run_id, judge_obj, metric=metric, rubric=rubric, force=force
                )
                cell.judge_runs[metric] = summary.run_id
        cells.append(cell)
    _summarise(wh, trait.name, cells)
    best = best_cell(cells, cfg.coherence_floor) if vector is not None else None
    parents = [c.generate_run for c in cells] + [r for c in cells for r in c.judge_runs.values()]
    with wh.run(
        "evaluate", {"config": asdict(cfg)}, parent_run_ids=parents, model_id=cfg.model, force=force
    ) as run:
        if not run.skipped:
            run.stats.update({"cells": [asdict(c) for c in cells], "best": asdict(best) if best else None})
    return EvaluateResult(run.run_id, cells, best, run.message)


def best_cell(cells: list[Cell], coherence_floor: float) -> Cell | None:
    """The cell with the highest trait score among coherent ones steered towards the trait.

    The paper picks the layer by steering towards the trait: a negative coefficient steers away, and
    coef 0 is the unsteered baseline, so neither may pick a layer.
    """
    eligible = [
        c
        for c in cells
        if (c.coef or 0) > 0 and c.trait_mean is not None and (c.coherence_mean or 0) >= coherence_floor
    ]
    return max(eligible, key=lambda c: c.trait_mean or 0.0) if eligible else None


def _summarise(wh: Any, trait: str, cells: Sequence[Cell]) -> None:
    """Trait mean, coherence mean, n_valid and null rate per cell (nulls are not zeros)."""
    con = wh.connect()
    for cell in cells:
        cell.n = con.execute(
            "SELECT count(*) FROM generations WHERE run_id = ?", [cell.generate_run]
        ).fetchone()[0]
        for metric, run_id in cell.judge_runs.items():
            n, n_valid, mean = con.execute(
                "SELECT count(*), count(score), avg(score) FROM judgments WHERE run_id = ?", [run_id]
            ).fetchone()
            if metric == trait:
                cell.trait_mean, cell.n_valid = mean, n_valid
                cell.null_rate = (n - n_valid) / n if n else 0.0
            else:
                cell.coherence_mean = mean


def summary_lines(result: EvaluateResult, cfg: EvaluateConfig) -> list[str]:
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    lines = [f"evaluate run {result.run_id}: trait {cfg.trait}, model {cfg.model}"]
    lines.append(
        f"{'layer':>5}  {'coef':>6}  {'trait':>6}  {'coher.':>6}  {'n':>5}  {'valid':>5}  {'null%':>5}"
    )
    for c in result.cells:
        layer = "-" if c.layer is None else str(c.layer)
        coef = "-" if c.coef is None else f"{c.coef:g}"
        lines.append(
            f"{layer:>5}  {coef:>6}  {fmt(c.trait_mean):>6}  {fmt(c.coherence_mean):>6}  {c.n:>5}  "
            f"{c.n_valid:>5}  {100 * c.null_rate:>5.1f}"
        )
    best = result.best
    if best is not None:
        lines.append(
            f"best: layer {best.layer} coef {best.coef:g} (trait {fmt(best.trait_mean)}, "
            f"coherence {fmt(best.coherence_mean)} >= {cfg.coherence_floor:g})"
        )
    elif cfg.judge == "none":
        lines.append("no judge: pass --judge to score the answers (pvdata sql shows the generations)")
    return lines

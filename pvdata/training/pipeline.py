"""`pvdata train`: LoRA SFT with optional preventative steering, recorded as one warehouse `train` run.

The run's id is a hash of what shapes the result (model, data content, LoRA, optimisation, steering
and monitoring with resolved vector ids and layers), so rerunning the same command after a kill finds
the same run and the same output folder, resumes from the newest checkpoint, and writes each step's
metrics row once. Afterwards: the adapter is saved under OUT/adapter, and the finetuning shift against
the base model (the adapter switched off) lands in `finetune_shifts`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError
from pvdata.pipelines.progress import Log, stderr_log
from pvdata.training.config import TrainConfig


@dataclass
class ResolvedVectors:
    """The steering and monitoring vectors with their layers, resolved before any model loads."""

    steer: Any = None
    steer_layers: tuple[int, ...] = ()
    monitor: Any = None
    monitor_trait: str | None = None
    monitor_layer: int | None = None
    parents: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    run_id: str
    out: Path | None
    adapter: Path | None
    skipped: bool = False
    message: str = ""
    steps: int = 0
    start_step: int = 0
    metrics: list[Any] = field(default_factory=list)
    shifts: list[Any] = field(default_factory=list)
    monitor_layer: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    trait: str | None = None


def _vector_runs(wh: Any, vector_id: str) -> list[str]:
    """The warehouse runs that wrote a vector (its lineage), or [] when it came from a file only."""
    if not wh.has_table("vectors"):
        return []
    rows = (
        wh.connect()
        .execute("SELECT DISTINCT run_id FROM vectors WHERE vector_id = ?", [vector_id])
        .fetchall()
    )
    return sorted(str(r[0]) for r in rows)


def resolve_vectors(cfg: TrainConfig, wh: Any) -> ResolvedVectors:
    """Vectors from files or the warehouse, and the steered and monitored layers (L comes from the vector)."""
    from pvdata.steering.spec import SteeringSpec, steering_row
    from pvdata.vectors.store import resolve_vector

    out = ResolvedVectors()
    model = str(cfg.model)
    if cfg.steering is not None:
        st = cfg.steering
        out.steer = resolve_vector(wh, st.vector, trait=st.trait, model_id=model)
        n = out.steer.n_layers
        if st.layers == "all":
            out.steer_layers = tuple(range(1, n + 1))
        elif st.layers is None:
            out.steer_layers = (max(1, n // 2),)
        else:
            bad = [x for x in st.layers if not 1 <= x <= n]
            if bad:
                raise ConfigError(
                    f"steering layers {bad} are out of range: the vector's model has layers 1..{n}"
                )
            out.steer_layers = tuple(st.layers)
        for layer in out.steer_layers:
            spec = SteeringSpec(mode=st.mode, layers=(layer,), incremental=st.incremental)
            row = steering_row(out.steer.values, layer, spec, out.steer.layers)
            if st.mode == "ablate" and float(row.norm()) == 0.0:
                raise ConfigError(
                    f"vector {out.steer.vector_id} has a zero row at layer {layer}: nothing to ablate"
                )
    trait = cfg.monitor_trait
    if cfg.monitor.vector is not None:
        out.monitor = resolve_vector(wh, cfg.monitor.vector, trait=trait or "", model_id=model)
        trait = trait or out.monitor.trait
    elif trait is not None:
        same = cfg.steering is not None and trait == cfg.steering.trait
        out.monitor = out.steer if same else resolve_vector(wh, None, trait=trait, model_id=model)
    out.monitor_trait = trait
    if out.monitor is not None:
        n = out.monitor.n_layers
        if cfg.monitor.layer is not None:
            out.monitor_layer = cfg.monitor.layer
        elif len(out.steer_layers) == 1:
            out.monitor_layer = out.steer_layers[0]
        else:
            out.monitor_layer = max(1, n // 2)
        if not 1 <= out.monitor_layer <= n:
            raise ConfigError(
                f"monitor layer {out.monitor_layer} is out of range: the model has layers 1..{n}"
            )
        out.monitor.unit(out.monitor_layer)  # a zero row is an error now, not after training
    for vec in {id(v): v for v in (out.steer, out.monitor) if v is not None}.values():
        out.parents += [r for r in _vector_runs(wh, vec.vector_id) if r not in out.parents]
    return out


def run_config(
    cfg: TrainConfig, vectors: ResolvedVectors, data_sha: str, eval_sha: str | None
) -> dict[str, Any]:
    """What shapes the trained adapter: the run id and the checkpoints' config hash come from this."""
    steering = None
    if cfg.steering is not None:
        steering = {
            "mode": cfg.steering.mode,
            "trait": cfg.steering.trait,
            "vector_id": vectors.steer.vector_id,
            "layers": list(vectors.steer_layers),
            "coef": cfg.steering.coef if cfg.steering.mode == "add" else None,
            "incremental": cfg.steering.incremental,
            "positions": cfg.steering.positions,
        }
    monitor = None
    if vectors.monitor is not None:
        monitor = {
            "trait": vectors.monitor_trait,
            "vector_id": vectors.monitor.vector_id,
            "layer": vectors.monitor_layer,
            "shift_questions": cfg.monitor.shift_questions,
        }
    return {
        "stage": "train",
        "model": cfg.model,
        "data_sha256": data_sha,
        "eval_data_sha256": eval_sha,
        "train_on": cfg.train_on,
        "max_length": cfg.max_length,
        "dtype": cfg.dtype,
        "device": cfg.device,
        "lora": cfg.lora.model_dump(mode="json"),
        "optim": cfg.optim.model_dump(mode="json"),
        "eval_every": cfg.eval_every,
        "steering": steering,
        "monitor": monitor,
    }


def _steering_setup(cfg: TrainConfig, vectors: ResolvedVectors) -> Any:
    from pvdata.steering import SteeringSpec
    from pvdata.training.loop import SteeringSetup

    if cfg.steering is None:
        return None
    spec = SteeringSpec(
        mode=cfg.steering.mode,
        layers=vectors.steer_layers,
        coef=cfg.steering.coef if cfg.steering.mode == "add" and cfg.steering.coef is not None else 1.0,
        positions=cfg.steering.positions,
        incremental=cfg.steering.incremental,
        vector_id=vectors.steer.vector_id,
    )
    return SteeringSetup(vector=vectors.steer, spec=spec)


def _base_name(model: str) -> str:
    """What the saved adapter names as its base: the alias or hub id as given, a folder made absolute."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def _metrics_row(m: Any, vectors: ResolvedVectors) -> dict[str, Any]:
    monitored = vectors.monitor is not None
    return {
        "step": m.step,
        "epoch": m.epoch,
        "loss": m.loss,
        "learning_rate": m.learning_rate,
        "grad_norm": m.grad_norm,
        "trait": vectors.monitor_trait if monitored else None,
        "vector_id": vectors.monitor.vector_id if monitored else None,
        "layer": vectors.monitor_layer if monitored else None,
        "projection": m.projection,
        "split": m.split,
        "n_tokens": m.n_tokens,
        "n_samples": m.n_samples,
        "step_seconds": m.seconds,
    }


def run_train(
    cfg: TrainConfig,
    warehouse: str,
    *,
    force: bool = False,
    log: Log = stderr_log,
    lm: Any = None,
    progress: bool = True,
    after_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train (or resume, or skip when it already succeeded); `lm` may be passed in (tests, notebooks)."""
    from pvdata.models import load_model
    from pvdata.training.checkpoint import save_adapter_atomic
    from pvdata.training.data import file_sha256, load_training_data, read_samples
    from pvdata.training.loop import LoopSettings, LoraParams, LoraTrainer, MonitorSetup, prepare_lora
    from pvdata.training.progress import ProgressBar
    from pvdata.training.shift import peft_finetuning_shift
    from pvdata.traits import load_trait
    from pvdata.warehouse import Warehouse

    cfg.require_inputs()
    assert cfg.model is not None and cfg.data is not None
    read_samples(cfg.data)  # a malformed file fails before anything else (names file, line and field)
    if cfg.eval_data:
        read_samples(cfg.eval_data)
    wh = Warehouse(warehouse)
    vectors = resolve_vectors(cfg, wh)
    trait = load_trait(vectors.monitor_trait) if vectors.monitor_trait else None
    questions = trait.split_questions("eval") if trait is not None else []
    if trait is not None and cfg.monitor.shift_questions > len(questions):
        raise ConfigError(
            f"monitor.shift_questions {cfg.monitor.shift_questions}: trait {trait.name} has "
            f"{len(questions)} eval questions"
        )
    data_sha = file_sha256(cfg.data)
    eval_sha = file_sha256(cfg.eval_data) if cfg.eval_data else None
    config = run_config(cfg, vectors, data_sha, eval_sha)

    with wh.run("train", config, parent_run_ids=vectors.parents, model_id=cfg.model, force=force) as run:
        if run.skipped:
            last = wh.get_run(run.run_id) or {}
            stats = json.loads(last.get("stats") or "{}")
            adapter = stats.get("adapter")
            log(run.message + (f" Adapter: {adapter}" if adapter else ""))
            return TrainResult(
                run.run_id,
                Path(stats["out"]) if stats.get("out") else None,
                Path(adapter) if adapter else None,
                skipped=True,
                message=run.message,
                stats=stats,
                monitor_layer=vectors.monitor_layer,
                model=cfg.model,
                trait=vectors.monitor_trait,
            )
        out = Path(cfg.out).expanduser() if cfg.out else wh.local_dir("adapters", run.run_id)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pvdata_train.json").write_text(
            json.dumps({"run_id": run.run_id, "warehouse": str(wh.root), "config": config}, indent=1)
        )
        if run.status_before == "resumed":
            log(run.message)
        if lm is None:
            log(f"loading {cfg.model}")
            lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, layers_path=cfg.layers_path)
        for vec in (vectors.steer, vectors.monitor):
            if vec is not None:
                vec.check_compatible(lm.n_layers, lm.hidden_size, lm.model_id)
        train = load_training_data(lm.tokenizer, cfg.data, train_on=cfg.train_on, max_length=cfg.max_length)
        evald = (
            load_training_data(lm.tokenizer, cfg.eval_data, train_on=cfg.train_on, max_length=cfg.max_length)
            if cfg.eval_data
            else None
        )
        for line, reason in train.skipped[:5]:
            log(f"skipped {cfg.data}:{line}: {reason}")
        o = cfg.optim
        prepare_lora(
            lm,
            LoraParams(
                cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.rslora, tuple(cfg.lora.target_modules)
            ),
            seed=o.seed,
        )
        settings = LoopSettings(
            lr=o.lr,
            schedule=o.schedule,
            warmup_steps=o.warmup_steps,
            batch_size=o.batch_size,
            grad_accum=o.grad_accum,
            epochs=o.epochs,
            max_steps=o.max_steps,
            weight_decay=o.weight_decay,
            max_grad_norm=o.max_grad_norm,
            adam_betas=o.adam_betas,
            adam_eps=o.adam_eps,
            seed=o.seed,
            eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoints.every,
            keep_checkpoints=cfg.checkpoints.keep,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        monitor = (
            MonitorSetup(vectors.monitor, vectors.monitor_layer)
            if vectors.monitor is not None and vectors.monitor_layer is not None
            else None
        )
        trainer = LoraTrainer(
            lm,
            train.samples,
            settings,
            steering=_steering_setup(cfg, vectors),
            monitor=monitor,
            eval_samples=evald.samples if evald else (),
            out=out,
            run_key=run.run_id,
            layers_path=cfg.layers_path,
        )
        start = trainer.resume()
        if trainer.resumed_from is not None:
            log(f"resuming from {trainer.resumed_from} (step {start} of {trainer.total})")
        steer_note = ""
        if cfg.steering is not None:
            st = cfg.steering
            what = f"coef {st.coef:g}" if st.mode == "add" and st.coef is not None else "ablate"
            steer_note = f", steering {st.trait} {what} at layers {_short(vectors.steer_layers)}" + (
                " (incremental)" if st.incremental else ""
            )
        log(
            f"training {run.run_id}: {len(train.samples)} samples, {trainer.total} steps of "
            f"{o.batch_size} x {o.grad_accum}{steer_note} -> {out}"
        )
        done = run.done_ids("train_metrics", ["step", "split"])
        writer = run.writer("train_metrics", chunk_rows=10_000, chunk_seconds=30.0)

        def on_metrics(m: Any) -> None:
            if (m.step, m.split) not in done:
                writer.write(_metrics_row(m, vectors))

        bar = ProgressBar(trainer.total, start=start) if progress else None
        t0 = time.monotonic()
        metrics = trainer.train(
            on_metrics=on_metrics,
            before_checkpoint=lambda _s: writer.flush(),
            after_step=after_step,
            progress=bar,
        )
        train_seconds = time.monotonic() - t0
        writer.flush()
        adapter = save_adapter_atomic(lm.model, out / "adapter", base_model=_base_name(cfg.model))
        shifts = []
        if monitor is not None and trait is not None:
            layers = [layer for layer in vectors.monitor.layers if layer >= 1]
            log(
                f"finetuning shift over {cfg.monitor.shift_questions} {trait.name} eval prompts, "
                f"{len(layers)} layers"
            )
            shifts = peft_finetuning_shift(
                lm, vectors.monitor, questions[: cfg.monitor.shift_questions], layers
            )
            if not run.done_ids("finetune_shifts", "layer"):
                run.writer("finetune_shifts").write(
                    [
                        {
                            "trait": trait.name,
                            "vector_id": vectors.monitor.vector_id,
                            "layer": r.layer,
                            "shift": r.shift,
                            "base_proj": r.base_proj,
                            "finetuned_proj": r.finetuned_proj,
                            "n_prompts": r.n_prompts,
                            "adapter": str(adapter),
                            "model_id": cfg.model,
                        }
                        for r in shifts
                    ]
                )
        train_rows = [m for m in metrics if m.split == "train"]
        step_times = [m.seconds for m in train_rows]
        at_layer = next((r for r in shifts if r.layer == vectors.monitor_layer), None)
        run.stats.update(
            {
                "out": str(out),
                "adapter": str(adapter),
                "data": cfg.data,
                "eval_data": cfg.eval_data,
                "samples": len(train.samples),
                "skipped_samples": len(train.skipped),
                "steps": trainer.total,
                "start_step": start,
                "resumed_from": str(trainer.resumed_from) if trainer.resumed_from else None,
                "final_loss": train_rows[-1].loss if train_rows else None,
                "mean_step_seconds": sum(step_times) / len(step_times) if step_times else None,
                "train_seconds": round(train_seconds, 3),
                "device": str(lm.device),
                "dtype": str(lm.dtype).replace("torch.", ""),
                "monitor_layer": vectors.monitor_layer,
                "shift": at_layer.shift if at_layer else None,
            }
        )
    return TrainResult(
        run.run_id,
        out,
        adapter,
        message=run.message,
        steps=trainer.total,
        start_step=start,
        metrics=metrics,
        shifts=shifts,
        monitor_layer=vectors.monitor_layer,
        stats=dict(run.stats),
        model=cfg.model,
        trait=vectors.monitor_trait,
    )


def _short(layers: tuple[int, ...]) -> str:
    from pvdata.vectors.persona_vector import format_layers

    return format_layers(layers)


def summary_lines(result: TrainResult) -> list[str]:
    """The closing summary: where the adapter is, the last losses, the shift, what to run next."""
    lines = [f"train run {result.run_id}"]
    if result.skipped:
        lines.append(f"  {result.message}")
    stats = result.stats
    if result.adapter is not None:
        lines.append(f"  adapter: {result.adapter}")
    if stats.get("final_loss") is not None:
        lines.append(
            f"  steps: {stats.get('steps')}  final loss: {stats['final_loss']:.4f}  "
            f"mean step: {stats.get('mean_step_seconds') or 0:.2f}s"
        )
    evals = [m for m in result.metrics if m.split == "eval"]
    if evals:
        lines.append(f"  eval loss at step {evals[-1].step}: {evals[-1].loss:.4f}")
    if stats.get("shift") is not None:
        lines.append(f"  finetuning shift at layer {stats.get('monitor_layer')}: {stats['shift']:+.4f}")
    if result.adapter is not None:
        lines += [
            "next:",
            f"  pvdata evaluate --trait {result.trait or 'TRAIT'} --model {result.model} "
            f"--adapter {result.adapter}",
            f'  pvdata sql "SELECT step, split, loss, projection FROM train_metrics '
            f"WHERE run_id = '{result.run_id}' ORDER BY step\"",
            f'  pvdata sql "SELECT layer, shift FROM finetune_shifts '
            f"WHERE run_id = '{result.run_id}' ORDER BY layer\"",
        ]
    return lines

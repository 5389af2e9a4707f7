"""The LoRA training loop: a plain torch loop (no transformers Trainer, no accelerate).

Why a custom loop: preventative steering needs hooks that are on exactly while the training forward
runs and off for everything else (evaluation, the finetuning shift, the saved adapter), and the
per-step projection must be read before the steering changes the activations. Both are a few lines
here and awkward through callbacks.

One step = one optimizer update over `grad_accum` micro-batches. The loss is the sum of token losses
over the step's trained (assistant) tokens divided by their count, so micro-batches of different
lengths weigh each token equally. The learning-rate schedule follows transformers'
`get_linear_schedule_with_warmup` (step 1 runs at lr 0 when warmup > 0, as in the research code).

The per-step projection: for every sample, the mean over its answer tokens of h_l . v_hat at the
monitored layer l, averaged over the step's samples. It is read by a hook that runs before any steering
hook on that block; when a layer below l is steered, the steered residual would reach l, so the
projection is then taken from a separate no-grad forward with all steering off, stopped after block l.

Imports torch, transformers and peft (through the model) only, so `python -m pvdata.bench train` runs
where pvdata's other dependencies are missing.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pvdata.training import paper
from pvdata.training.data import EncodedSample, collate
from pvdata.training.errors import TrainingError


@dataclass(frozen=True)
class LoraParams:
    r: int = paper.LORA_R
    alpha: int = paper.LORA_ALPHA
    dropout: float = paper.LORA_DROPOUT
    rslora: bool = paper.RSLORA
    target_modules: tuple[str, ...] = paper.TARGET_MODULES


@dataclass(frozen=True)
class LoopSettings:
    """Optimisation and bookkeeping; see pvdata.training.config.OptimSettings for the meaning."""

    lr: float = paper.LR
    schedule: str = paper.SCHEDULE
    warmup_steps: int = paper.WARMUP_STEPS
    batch_size: int = paper.BATCH_SIZE
    grad_accum: int = paper.GRAD_ACCUM
    epochs: int = paper.EPOCHS
    max_steps: int | None = None
    weight_decay: float = paper.WEIGHT_DECAY
    max_grad_norm: float | None = paper.MAX_GRAD_NORM
    adam_betas: tuple[float, float] = paper.ADAM_BETAS
    adam_eps: float = paper.ADAM_EPS
    seed: int = 0
    eval_every: int | None = None
    checkpoint_every: int | None = None  # None: no checkpoints
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = False


@dataclass
class SteeringSetup:
    """What the hooks do during training: a SteeringSpec (layers already resolved) and its vector."""

    vector: Any  # a PersonaVector or an [L+1, H] tensor
    spec: Any  # pvdata.steering.SteeringSpec


@dataclass
class MonitorSetup:
    """The vector and layer of the per-step projection."""

    vector: Any  # a PersonaVector or an [L+1, H] tensor
    layer: int


@dataclass
class StepMetrics:
    """One train_metrics row before the warehouse adds run_id and the vector's identity."""

    step: int
    epoch: float
    split: str  # train | eval
    loss: float
    n_tokens: int
    n_samples: int
    seconds: float
    learning_rate: float | None = None
    grad_norm: float | None = None
    projection: float | None = None


@dataclass(frozen=True)
class PlannedStep:
    epoch: int
    micro_batches: tuple[tuple[int, ...], ...]
    epoch_progress: float  # epoch + fraction of that epoch's samples seen after this step


def plan_steps(
    n_samples: int, *, batch_size: int, grad_accum: int, epochs: int, max_steps: int | None, seed: int
) -> list[PlannedStep]:
    """The whole data order, fixed by the seed: a new permutation each epoch, then micro-batches.

    Deterministic, so a resumed run recomputes the plan and starts at its checkpoint's step. The last
    step of an epoch may have fewer micro-batches (the loss is normalised by tokens, so it still counts).
    """
    if n_samples < 1:
        raise TrainingError("no training samples")
    steps: list[PlannedStep] = []
    epoch = 0
    while True:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n_samples, generator=gen).tolist()
        micro = [tuple(order[i : i + batch_size]) for i in range(0, n_samples, batch_size)]
        seen = 0
        for j in range(0, len(micro), grad_accum):
            group = tuple(micro[j : j + grad_accum])
            seen += sum(len(m) for m in group)
            steps.append(PlannedStep(epoch, group, epoch + seen / n_samples))
        epoch += 1
        if max_steps is None and epoch >= epochs:
            break
        if max_steps is not None and len(steps) >= max_steps:
            break
    return steps[:max_steps] if max_steps is not None else steps


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """transformers' linear schedule with warmup (`step` counts completed optimizer steps)."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies over positions whose label is not -100 (float32)."""
    targets = labels[:, 1:]
    keep = targets != -100
    picked = logits[:, :-1][keep]
    return torch.nn.functional.cross_entropy(picked.float(), targets[keep], reduction="sum")


def prepare_lora(lm: Any, params: LoraParams, *, seed: int) -> Any:
    """Wrap lm.model in a PEFT LoRA model in place (seeded adapter init); returns the PEFT model.

    The decoder blocks stay the same modules (LoRA swaps the linear layers inside them), so lm.layers
    stays valid and steering hooks attach as on the base model.
    """
    from peft import LoraConfig, get_peft_model

    from pvdata.errors import ConfigError

    if getattr(lm, "adapter", None):
        raise TrainingError(
            f"model {lm.model_id} already carries the adapter {lm.adapter}: train on the base model "
            "(stacking a new adapter on a loaded one is not supported)"
        )
    names = {name.rsplit(".", 1)[-1] for name, _ in lm.model.named_modules()}
    missing = [t for t in params.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"LoRA target modules {missing} are not in {type(lm.model).__name__}; set lora.target_modules to "
            f"names of its linear layers (the paper's: {', '.join(paper.TARGET_MODULES)})"
        )
    config = LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        use_rslora=params.rslora,
        target_modules=list(params.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft 0.21 asks transformers 5 a deprecated question; the answer is right, the warning is noise
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)
        model = get_peft_model(lm.model, config)
    lm.model = model
    return model


def vector_rows(vector: Any) -> torch.Tensor:
    """[L+1, H] float32 rows of a PersonaVector or a tensor."""
    values = vector if isinstance(vector, torch.Tensor) else vector.values
    return values.detach().to(torch.float32)


def unit_row(vector: Any, layer: int) -> torch.Tensor:
    row = vector_rows(vector)[layer]
    norm = torch.linalg.vector_norm(row)
    if not math.isfinite(float(norm)) or float(norm) == 0.0:
        raise TrainingError(f"the monitored vector has a zero row at layer {layer}: monitor another layer")
    return row / norm


class _StopForward(Exception):
    """Raised by the monitor hook in a projection-only forward: later blocks are wasted work."""


class _Monitor:
    """A forward hook on block l-1, prepended so it sees the block's output before steering hooks."""

    def __init__(self, block: Any, unit: torch.Tensor) -> None:
        self.block = block
        self.unit = unit
        self.mask: torch.Tensor | None = None
        self.stop = False
        self.values: torch.Tensor | None = None
        self.handle: Any = None

    def attach(self) -> None:
        if self.handle is None:
            self.handle = self.block.register_forward_hook(self._hook, prepend=True)

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def arm(self, mask: torch.Tensor, *, stop: bool = False) -> None:
        self.mask, self.stop, self.values = mask, stop, None

    def take(self) -> torch.Tensor:
        if self.values is None:
            raise TrainingError(
                "the monitor hook did not run during the forward: the decoder blocks found are not the ones "
                "the model runs (check --layers-path)"
            )
        values, self.values, self.mask = self.values, None, None
        return values

    def _hook(self, module: Any, args: Any, output: Any) -> None:
        if self.mask is None:
            return
        h = output[0] if isinstance(output, tuple) else output
        with torch.no_grad():
            proj = h.detach().float() @ self.unit.to(h.device)  # [B, T]
            mask = self.mask.to(h.device)
            self.values = (proj * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        if self.stop:
            raise _StopForward


class _NoSteering:
    def remove(self) -> None:
        pass


class LoraTrainer:
    """Train `lm.model` (already wrapped by `prepare_lora`) on encoded samples.

    `out` enables checkpoints (and resume); `run_key` (the warehouse run id) ties checkpoints to the run
    that made them.
    """

    def __init__(
        self,
        lm: Any,
        train: Sequence[EncodedSample],
        settings: LoopSettings,
        *,
        steering: SteeringSetup | None = None,
        monitor: MonitorSetup | None = None,
        eval_samples: Sequence[EncodedSample] = (),
        out: Path | None = None,
        run_key: str = "",
        layers_path: str | None = None,
    ) -> None:
        self.lm = lm
        self.model = lm.model
        self.train_samples = list(train)
        self.eval_samples = list(eval_samples)
        self.settings = settings
        self.steering = steering
        self.out = out
        self.run_key = run_key
        self.layers_path = layers_path
        self.device = next(self.model.parameters()).device
        self.pad_id = int(getattr(lm.tokenizer, "pad_token_id", None) or 0)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError("the model has no trainable parameters: wrap it with prepare_lora first")
        self.plan = plan_steps(
            len(self.train_samples),
            batch_size=settings.batch_size,
            grad_accum=settings.grad_accum,
            epochs=settings.epochs,
            max_steps=settings.max_steps,
            seed=settings.seed,
        )
        self.total = len(self.plan)
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=settings.lr,
            betas=settings.adam_betas,
            eps=settings.adam_eps,
            weight_decay=settings.weight_decay,
        )
        total, warmup, schedule = self.total, settings.warmup_steps, settings.schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total=total, warmup=warmup, schedule=schedule)
        )
        from pvdata.models.layers import find_layers

        # the blocks the steering hooks attach to (apply_spec resolves the same ones)
        self.layer_info = find_layers(self.model, layers_path) if layers_path else lm.layers
        self.monitor_setup = monitor
        self.monitor: _Monitor | None = None
        if monitor is not None:
            self.layer_info.check_layer(monitor.layer, allow_embedding=False)
            unit = unit_row(monitor.vector, monitor.layer).to(self.device)
            width = self.model.get_input_embeddings().weight.shape[1]
            if unit.shape[0] != width:
                raise TrainingError(
                    f"the monitored vector has width {unit.shape[0]} but the model's hidden size is {width}: "
                    "use a vector extracted from this model"
                )
            self.monitor = _Monitor(self.layer_info.blocks[monitor.layer - 1], unit)
        self.clean_monitor = (
            steering is not None and monitor is not None and min(steering.spec.layers) < monitor.layer
        )
        self.start_step = 0
        self.resumed_from: Path | None = None
        self.step_seconds: list[float] = []
        if steering is not None:  # attach once now so a hook that cannot attach fails before any work
            self._attach_steering().remove()

    # -- resume ----------------------------------------------------------------------------------------------

    def resume(self) -> int:
        """Load the newest complete checkpoint under `out`, if any; returns the step training goes on from."""
        from pvdata.training.checkpoint import list_checkpoints, load_checkpoint, remove_partial

        if self.out is None:
            return 0
        remove_partial(self.out)
        found = list_checkpoints(self.out)
        if not found:
            return 0
        step, path = found[-1]
        if step > self.total:
            raise TrainingError(f"checkpoint {path} is at step {step}, past this run's {self.total} steps")
        load_checkpoint(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            run_key=self.run_key,
        )
        self.start_step, self.resumed_from = step, path
        return step

    # -- hooks -----------------------------------------------------------------------------------------------

    def _attach_steering(self) -> Any:
        if self.steering is None:
            return _NoSteering()
        from pvdata.steering import apply_spec

        return apply_spec(self.lm, self.steering.vector, self.steering.spec, layers_path=self.layers_path)

    def _fire_counters(self) -> tuple[dict[int, int], list[Any]]:
        counts: dict[int, int] = {}
        handles: list[Any] = []
        if self.steering is None:
            return counts, handles
        for layer in self.steering.spec.layers:
            counts[layer] = 0

            def bump(_m: Any, _a: Any, _o: Any, layer: int = layer) -> None:
                counts[layer] += 1

            handles.append(self.layer_info.blocks[layer - 1].register_forward_hook(bump))
        return counts, handles

    # -- one forward -----------------------------------------------------------------------------------------

    def _projection_only(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        assert self.monitor is not None
        self.monitor.arm(batch["response_mask"], stop=True)
        with torch.no_grad(), contextlib.suppress(_StopForward):
            self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return self.monitor.take()

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        )
        return out.logits  # type: ignore[no-any-return]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- evaluation ------------------------------------------------------------------------------------------

    def evaluate(self, step: int, epoch: float) -> StepMetrics:
        """Eval loss (token mean) and projection over the eval samples, without steering."""
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        loss_sum, n_tokens, projections = 0.0, 0, []
        bs = self.settings.batch_size
        try:
            with torch.no_grad():
                for i in range(0, len(self.eval_samples), bs):
                    batch = collate(self.eval_samples[i : i + bs], self.pad_id, self.device)
                    if self.monitor is not None:
                        self.monitor.arm(batch["response_mask"])
                    loss_sum += float(token_loss_sum(self._logits(batch), batch["labels"]))
                    n_tokens += int((batch["labels"][:, 1:] != -100).sum())
                    if self.monitor is not None:
                        projections.append(self.monitor.take())
        finally:
            self.model.train(was_training)
        projection = float(torch.cat(projections).mean()) if projections else None
        return StepMetrics(
            step=step,
            epoch=epoch,
            split="eval",
            loss=loss_sum / max(n_tokens, 1),
            n_tokens=n_tokens,
            n_samples=len(self.eval_samples),
            seconds=time.perf_counter() - t0,
            projection=projection,
        )

    # -- the loop --------------------------------------------------------------------------------------------

    def train(
        self,
        *,
        on_metrics: Callable[[StepMetrics], None] | None = None,
        before_checkpoint: Callable[[int], None] | None = None,
        after_step: Callable[[int], None] | None = None,
        progress: Any = None,
    ) -> list[StepMetrics]:
        """Run the steps from `start_step` to the end; hooks are on only inside this call.

        `before_checkpoint(step)` runs before each checkpoint is written (commit the metrics rows there,
        so a step a checkpoint covers always has its row). `progress.update(step, loss, lr)` if given.
        """
        from pvdata.training.checkpoint import save_checkpoint

        s = self.settings
        emitted: list[StepMetrics] = []

        def emit(m: StepMetrics) -> None:
            emitted.append(m)
            if on_metrics is not None:
                on_metrics(m)

        self.model.train()
        if s.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.monitor is not None:
            self.monitor.attach()
        counts, counters = self._fire_counters()
        steering = self._attach_steering()
        checked = False
        last_eval = -1
        try:
            for index in range(self.start_step, self.total):
                planned = self.plan[index]
                self._sync()
                t0 = time.perf_counter()
                cpu_batches = [
                    collate([self.train_samples[i] for i in mb], self.pad_id) for mb in planned.micro_batches
                ]
                n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in cpu_batches)  # no device sync
                batches = [
                    {k: v.to(self.device, non_blocking=True) for k, v in b.items()} for b in cpu_batches
                ]
                loss_total_t = torch.zeros((), device=self.device)
                projections: list[torch.Tensor] = []
                for batch in batches:
                    if self.clean_monitor:
                        steering.remove()
                        projections.append(self._projection_only(batch))
                        steering = self._attach_steering()
                    elif self.monitor is not None:
                        self.monitor.arm(batch["response_mask"])
                    loss = token_loss_sum(self._logits(batch), batch["labels"])
                    (loss / n_tokens).backward()
                    loss_total_t += loss.detach()
                    if self.monitor is not None and not self.clean_monitor:
                        projections.append(self.monitor.take())
                    if not checked:
                        self._check_fired(counts)
                        checked = True
                max_norm = s.max_grad_norm if s.max_grad_norm is not None else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
                lr = float(self.optimizer.param_groups[0]["lr"])
                loss_total = float(loss_total_t)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self._sync()
                seconds = time.perf_counter() - t0
                self.step_seconds.append(seconds)
                step = index + 1
                emit(
                    StepMetrics(
                        step=step,
                        epoch=planned.epoch_progress,
                        split="train",
                        loss=loss_total / max(n_tokens, 1),
                        n_tokens=n_tokens,
                        n_samples=sum(len(m) for m in planned.micro_batches),
                        seconds=seconds,
                        learning_rate=lr,
                        grad_norm=grad_norm,
                        projection=float(torch.cat(projections).mean()) if projections else None,
                    )
                )
                if progress is not None:
                    progress.update(step, loss_total / max(n_tokens, 1), lr)
                if self.eval_samples and (step == self.total or (s.eval_every and step % s.eval_every == 0)):
                    steering.remove()
                    emit(self.evaluate(step, planned.epoch_progress))
                    steering = self._attach_steering()
                    last_eval = step
                if self.out is not None and (
                    step == self.total or (s.checkpoint_every and step % s.checkpoint_every == 0)
                ):
                    if before_checkpoint is not None:
                        before_checkpoint(step)
                    save_checkpoint(
                        self.out,
                        step=step,
                        model=self.model,
                        optimizer=self.optimizer,
                        scheduler=self.scheduler,
                        run_key=self.run_key,
                        keep=s.keep_checkpoints,
                    )
                if after_step is not None:
                    after_step(step)
        finally:
            steering.remove()
            for handle in counters:
                handle.remove()
            if self.monitor is not None:
                self.monitor.detach()
            if s.gradient_checkpointing:
                self.model.gradient_checkpointing_disable()
            self.model.eval()
            if progress is not None:
                progress.close()
        if self.eval_samples and last_eval != self.total and self.start_step == self.total:
            # resumed after the last step's checkpoint: the final evaluation may not have been recorded
            if self.monitor is not None:
                self.monitor.attach()
            try:
                emit(self.evaluate(self.total, self.plan[-1].epoch_progress))
            finally:
                if self.monitor is not None:
                    self.monitor.detach()
        return emitted

    def _check_fired(self, counts: dict[int, int]) -> None:
        silent = [layer for layer, n in counts.items() if n == 0]
        if silent:
            path = self.layer_info.path
            raise TrainingError(
                f"steering hooks on layer(s) {silent} never ran during the first training forward: the "
                f"blocks found at {path!r} are not the ones the model runs. Pass the right --layers-path"
            )

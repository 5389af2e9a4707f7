"""The training loop on tiny models: data order, schedule, loss, steering during training, the monitored
projection (read before steering), hooks that cannot attach, and hooks gone after training."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from train_helpers import conversations

from pvdata.chat import Conversation
from pvdata.models import load_model
from pvdata.steering import SteeringSpec
from pvdata.training.data import EncodedSample, collate, encode_messages
from pvdata.training.errors import TrainingError
from pvdata.training.loop import (
    LoopSettings,
    LoraParams,
    LoraTrainer,
    MonitorSetup,
    SteeringSetup,
    lr_factor,
    plan_steps,
    prepare_lora,
    token_loss_sum,
)
from pvdata.vectors import PersonaVector

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

SMALL_LORA = LoraParams(r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))


def fresh() -> Any:
    """A model of its own: prepare_lora wraps in place, so never the session fixtures."""
    return load_model("tiny-random-llama", device="cpu")


def rand_vector(lm: Any, seed: int = 0, scale: float = 1.0) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(lm.n_layers + 1, lm.hidden_size, generator=g) * scale
    return PersonaVector(trait="evil", model_id="tiny-random-llama", values=values)


def encoded(lm: Any, convs: list[list[dict[str, str]]]) -> list[EncodedSample]:
    return [encode_messages(lm.tokenizer, c) for c in convs]


def test_plan_covers_each_sample_once_per_epoch_and_is_seeded() -> None:
    plan = plan_steps(7, batch_size=2, grad_accum=2, epochs=2, max_steps=None, seed=3)
    assert len(plan) == 4 and [p.epoch for p in plan] == [0, 0, 1, 1]
    for epoch in (0, 1):
        seen = [i for p in plan if p.epoch == epoch for mb in p.micro_batches for i in mb]
        assert sorted(seen) == list(range(7))
    assert [p.epoch_progress for p in plan] == [4 / 7, 1.0, 1 + 4 / 7, 2.0]
    first = [i for mb in plan[0].micro_batches for i in mb]
    second = [i for mb in plan[2].micro_batches for i in mb]
    assert first != second  # a new order each epoch
    assert plan == plan_steps(7, batch_size=2, grad_accum=2, epochs=2, max_steps=None, seed=3)
    assert plan != plan_steps(7, batch_size=2, grad_accum=2, epochs=2, max_steps=None, seed=4)
    cycled = plan_steps(4, batch_size=2, grad_accum=1, epochs=1, max_steps=5, seed=0)
    assert len(cycled) == 5 and cycled[-1].epoch == 2


def test_schedule_matches_transformers() -> None:
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=5, num_training_steps=12)
    ours = []
    for step in range(12):
        assert opt.param_groups[0]["lr"] == pytest.approx(
            lr_factor(step, total=12, warmup=5, schedule="linear")
        )
        ours.append(lr_factor(step, total=12, warmup=5, schedule="linear"))
        opt.step()
        sched.step()
    assert ours[0] == 0.0 and ours[5] == 1.0
    assert lr_factor(3, total=12, warmup=0, schedule="constant") == 1.0


def test_token_loss_matches_the_models_own_loss(tiny_llama: Any) -> None:
    batch = collate(encoded(tiny_llama, conversations(3)), tiny_llama.tokenizer.pad_token_id)
    with torch.no_grad():
        out = tiny_llama.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        n = int((batch["labels"][:, 1:] != -100).sum())
        torch.testing.assert_close(token_loss_sum(out.logits, batch["labels"]) / n, out.loss)


def _trainer(lm: Any, convs: Any, **kw: Any) -> LoraTrainer:
    settings = LoopSettings(
        lr=kw.pop("lr", 1e-2),
        warmup_steps=0,
        batch_size=2,
        grad_accum=kw.pop("grad_accum", 1),
        max_steps=kw.pop("max_steps", 2),
    )
    return LoraTrainer(lm, encoded(lm, convs), settings, **kw)


class Probe:
    """Records block `layer`'s own output (before steering) and what block layer+1 receives (after)."""

    def __init__(self, lm: Any, layer: int) -> None:
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []
        blocks = lm.layers.blocks
        self.handles = [
            blocks[layer - 1].register_forward_hook(self._out, prepend=True),
            blocks[layer].register_forward_pre_hook(self._in, with_kwargs=True),
        ]

    def _out(self, _m: Any, _a: Any, output: Any) -> None:
        h = output[0] if isinstance(output, tuple) else output
        self.before.append(h.detach().clone())

    def _in(self, _m: Any, args: Any, kwargs: Any) -> None:
        h = args[0] if args else kwargs["hidden_states"]
        self.after.append(h.detach().clone())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _step_batches(trainer: LoraTrainer) -> list[dict[str, torch.Tensor]]:
    return [
        collate([trainer.train_samples[i] for i in mb], trainer.pad_id)
        for p in trainer.plan
        for mb in p.micro_batches
    ]


def _masked_mean_proj(h: torch.Tensor, mask: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    proj = h.float() @ unit
    return (proj * mask).sum(1) / mask.sum(1)


def test_steering_adds_coef_v_at_the_layer_during_training_and_the_projection_is_read_before() -> None:
    lm = fresh()
    prepare_lora(lm, SMALL_LORA, seed=0)
    vec = rand_vector(lm)
    spec = SteeringSpec(mode="add", layers=(2,), coef=3.0, vector_id=vec.vector_id)
    trainer = _trainer(lm, conversations(4), steering=SteeringSetup(vec, spec), monitor=MonitorSetup(vec, 2))
    probe = Probe(lm, 2)
    try:
        metrics = trainer.train()
    finally:
        probe.remove()
    batches = _step_batches(trainer)
    assert len(probe.before) == len(probe.after) == len(batches) == 2
    unit = vec.unit(2)
    for m, batch, before, after in zip(metrics, batches, probe.before, probe.after, strict=True):
        real = batch["attention_mask"].bool()
        delta = after - before
        torch.testing.assert_close(
            delta[real], (3.0 * vec.values[2]).expand_as(delta[real]), atol=1e-5, rtol=0
        )
        assert (delta[~real] == 0).all()  # pads are never steered
        pre = _masked_mean_proj(before, batch["response_mask"], unit).mean()
        post = _masked_mean_proj(after, batch["response_mask"], unit).mean()
        assert m.projection == pytest.approx(float(pre), abs=1e-5)
        assert float(post) == pytest.approx(m.projection + 3.0 * float(vec.values[2].norm()), abs=1e-4)


def test_ablation_zeroes_the_projection_during_training() -> None:
    lm = fresh()
    prepare_lora(lm, SMALL_LORA, seed=0)
    vec = rand_vector(lm, scale=0.5)
    spec = SteeringSpec(mode="ablate", layers=(3,), vector_id=vec.vector_id)
    trainer = _trainer(lm, conversations(4), steering=SteeringSetup(vec, spec), monitor=MonitorSetup(vec, 3))
    probe = Probe(lm, 3)
    try:
        metrics = trainer.train()
    finally:
        probe.remove()
    unit = vec.unit(3)
    batches = _step_batches(trainer)
    for m, batch, before, after in zip(metrics, batches, probe.before, probe.after, strict=True):
        real = batch["attention_mask"].bool()
        scale = float(before.norm(dim=-1).max())
        assert float((after[real].float() @ unit).abs().max()) < 1e-5 * scale
        assert float((before[real].float() @ unit).abs().max()) > 1e-2 * scale  # it was there before
        assert torch.equal(after[~real], before[~real])  # pads are never touched
        assert m.projection is not None and abs(m.projection) > 1e-3


@pytest.mark.parametrize(
    ("steer_layer", "monitor_layer"),
    [(None, 2), (2, 2), (1, 3)],
    ids=["unsteered", "steered-at-monitored-layer", "steered-upstream-clean-forward"],
)
def test_first_step_projection_equals_an_independent_unsteered_computation(
    steer_layer: int | None, monitor_layer: int
) -> None:
    """Step 1 runs on the initial adapter (LoRA B = 0, i.e. the base model), so its projection must equal
    `compute_projections` on the base model over the step's samples, whatever the steering does."""
    from pvdata.projections import compute_projections

    base = fresh()
    lm = fresh()
    prepare_lora(lm, SMALL_LORA, seed=0)
    vec = rand_vector(lm, scale=2.0)
    steering = None
    if steer_layer is not None:
        steering = SteeringSetup(vec, SteeringSpec(layers=(steer_layer,), coef=4.0, vector_id=vec.vector_id))
    convs = conversations(6, seed=1)
    trainer = _trainer(
        lm, convs, grad_accum=2, max_steps=1, steering=steering, monitor=MonitorSetup(vec, monitor_layer)
    )
    assert trainer.clean_monitor == (steer_layer is not None and steer_layer < monitor_layer)
    metrics = trainer.train()
    chosen = [i for mb in trainer.plan[0].micro_batches for i in mb]
    pairs = [Conversation(tuple(convs[i][:-1]), convs[i][-1]["content"]) for i in chosen]
    expected = compute_projections(base, pairs, [vec], monitor_layer).values["proj"][:, 0].mean()
    assert metrics[0].projection == pytest.approx(float(expected), rel=1e-4, abs=1e-5)


def test_a_hook_on_blocks_the_model_never_runs_stops_training() -> None:
    from pvdata.models.layers import find_layers

    lm = fresh()
    inner = lm.model.model
    inner.decoy = torch.nn.ModuleList([copy.deepcopy(b) for b in inner.layers])  # never called
    lm.layers = find_layers(lm.model, "model.decoy")
    prepare_lora(lm, SMALL_LORA, seed=0)
    vec = rand_vector(lm)
    spec = SteeringSpec(layers=(2,), coef=1.0, vector_id=vec.vector_id)
    trainer = _trainer(lm, conversations(4), steering=SteeringSetup(vec, spec), layers_path="model.decoy")
    with pytest.raises(TrainingError, match=r"never ran .*model.decoy.*--layers-path"):
        trainer.train()
    hooked = [n for n, m in lm.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooked == []


def test_steering_that_cannot_attach_fails_before_training() -> None:
    from pvdata.errors import ModelError, VectorError

    lm = fresh()
    prepare_lora(lm, SMALL_LORA, seed=0)
    vec = rand_vector(lm)
    with pytest.raises(ModelError, match=r"valid layers are 1\.\.4"):
        _trainer(lm, conversations(2), steering=SteeringSetup(vec, SteeringSpec(layers=(5,), coef=1.0)))
    wrong = PersonaVector(trait="evil", model_id="other", values=torch.randn(7, 64))
    with pytest.raises(VectorError, match="rows"):
        _trainer(lm, conversations(2), steering=SteeringSetup(wrong, SteeringSpec(layers=(2,), coef=1.0)))
    assert all(not p.grad for p in lm.model.parameters() if p.grad is not None)


def test_gradient_checkpointing_trains_the_same_steered_model() -> None:
    results = []
    for checkpointing in (False, True):
        lm = fresh()
        prepare_lora(lm, SMALL_LORA, seed=0)
        vec = rand_vector(lm)
        spec = SteeringSpec(layers=(1, 3), coef=2.0, incremental=True, vector_id=vec.vector_id)
        settings = LoopSettings(
            lr=1e-2, warmup_steps=0, batch_size=2, max_steps=3, gradient_checkpointing=checkpointing
        )
        trainer = LoraTrainer(
            lm,
            encoded(lm, conversations(6)),
            settings,
            steering=SteeringSetup(vec, spec),
            monitor=MonitorSetup(vec, 2),
        )
        metrics = trainer.train()
        weights = {n: p.detach().clone() for n, p in lm.model.named_parameters() if "lora_" in n}
        results.append(([(m.loss, m.projection) for m in metrics], weights))
    (curve_a, w_a), (curve_b, w_b) = results
    for (la, pa), (lb, pb) in zip(curve_a, curve_b, strict=True):
        assert la == pytest.approx(lb, rel=1e-5) and pa == pytest.approx(pb, rel=1e-5, abs=1e-6)
    for name, w in w_a.items():
        torch.testing.assert_close(w_b[name], w, rtol=1e-4, atol=1e-6)

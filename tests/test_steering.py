"""Steering hooks: layer convention, positions and padding, exactness, cleanup, LoRA gradients, errors."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pvdata.errors import ConfigError, ModelError, PvdataError, VectorError
from pvdata.models.layers import find_layers
from pvdata.steering import (
    MODES,
    POSITIONS,
    SteeringSpec,
    ablate,
    ablate_direction,
    apply_spec,
    apply_steering,
    steer,
)

PROMPTS = ["the good assistant will help people find the truth", "hi", "what is the plan for today"]


@dataclass
class FakeVector:
    """Stands in for pvdata.vectors.PersonaVector: anything with .values and .vector_id."""

    values: torch.Tensor
    vector_id: str = "vec-test"


def rand_vector(lm: Any, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(lm.n_layers + 1, lm.hidden_size, generator=gen)


@pytest.fixture(params=["tiny_llama", "tiny_qwen2"])
def lm(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def encode(lm: Any, prompts: list[str] = PROMPTS, side: str = "left") -> dict[str, torch.Tensor]:
    tok = copy.copy(lm.tokenizer)
    tok.padding_side = side
    return dict(tok(prompts, return_tensors="pt", padding=True))


def logits(model: Any, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**enc).logits


def hook_counts(model: Any) -> tuple[int, ...]:
    info = find_layers(model)
    return (len(info.backbone._forward_pre_hooks), *(len(b._forward_hooks) for b in info.blocks))


@contextmanager
def record_block(model: Any, layer: int) -> Iterator[list[torch.Tensor]]:
    """Output of block `layer`-1 as seen by hooks registered now (after any active steering hook)."""
    seen: list[torch.Tensor] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        seen.append(out.detach().clone())

    handle = find_layers(model).blocks[layer - 1].register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def record_inputs(model: Any) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Input hidden states of every block, keyed by block index."""
    seen: dict[int, list[torch.Tensor]] = {}
    handles = []
    for i, block in enumerate(find_layers(model).blocks):

        def pre(module: Any, args: Any, kwargs: Any, i: int = i) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            seen.setdefault(i, []).append(h.detach().clone())

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_masks(model: Any) -> Iterator[list[torch.Tensor | None]]:
    masks: list[torch.Tensor | None] = []

    def pre(module: Any, args: Any, kwargs: Any) -> None:
        mask = kwargs.get("attention_mask")
        masks.append(mask.clone() if mask is not None else None)

    handle = find_layers(model).backbone.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield masks
    finally:
        handle.remove()


# --- exactness -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", POSITIONS)
def test_coef_zero_is_bit_identical(lm: Any, dtype: torch.dtype, positions: str) -> None:
    model = lm.model if dtype == torch.float32 else copy.deepcopy(lm.model).to(dtype)
    enc = encode(lm)
    vec = rand_vector(lm, scale=10.0)
    base = logits(model, enc)
    with steer(model, vec, layers="all", coef=0.0, positions=positions):
        same = logits(model, enc)
    assert same.dtype == dtype
    assert torch.equal(same, base)
    with steer(model, vec, layers=2, coef=1.0, positions=positions):
        assert not torch.equal(logits(model, enc), base)  # the zero test is not vacuous


# --- layer convention ------------------------------------------------------------------------------


def test_layer_l_changes_input_of_block_l_only(lm: Any) -> None:
    enc = encode(lm, PROMPTS[:1])
    vec = rand_vector(lm)
    layer, coef = 2, 3.0
    with record_inputs(lm.model) as base_in:
        base = logits(lm.model, enc)
    with steer(lm, vec, layers=layer, coef=coef), record_inputs(lm.model) as steered_in:
        out = logits(lm.model, enc)
    # block index l-1 runs before the hook; block index l reads the steered layer-l output
    for i in range(layer):
        assert torch.equal(steered_in[i][0], base_in[i][0])
    expected = base_in[layer][0] + coef * vec[layer]
    torch.testing.assert_close(steered_in[layer][0], expected, rtol=0, atol=1e-6)
    assert not torch.equal(out, base)


def test_last_layer_changes_logits(lm: Any) -> None:
    enc = encode(lm, PROMPTS[:1])
    base = logits(lm.model, enc)
    with steer(lm, rand_vector(lm), layers=lm.n_layers, coef=2.0):
        assert not torch.equal(logits(lm.model, enc), base)


# --- ablation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [(2,), (1, 3)])
def test_ablation_removes_projection(lm: Any, layers: tuple[int, ...]) -> None:
    enc = encode(lm, PROMPTS[:1])
    # a direction the activations really have: the mean activation itself
    with record_inputs(lm.model) as seen:
        logits(lm.model, enc)
    values = torch.zeros(lm.n_layers + 1, lm.hidden_size)
    for layer in range(1, lm.n_layers):
        values[layer] = seen[layer][0][0].mean(0)
    values[lm.n_layers] = torch.ones(lm.hidden_size)
    for layer in layers:
        v_hat = values[layer] / values[layer].norm()
        with record_block(lm.model, layer) as plain:
            logits(lm.model, enc)
        assert (plain[0] @ v_hat).abs().max() > 1e-2 * plain[0].norm(dim=-1).max()
    with ablate(lm, FakeVector(values), layers=layers):
        for layer in layers:
            v_hat = values[layer] / values[layer].norm()
            with record_block(lm.model, layer) as after:
                logits(lm.model, enc)
            proj = (after[0] @ v_hat).abs()
            assert (proj <= 1e-4 * after[0].norm(dim=-1)).all()


def test_ablate_rejects_coef_and_zero_rows(tiny_llama: Any) -> None:
    vec = rand_vector(tiny_llama)
    with (
        pytest.raises(ConfigError, match="ablate"),
        steer(tiny_llama, vec, layers=1, coef=2.0, mode="ablate"),
    ):
        pass
    vec[3] = 0.0
    with pytest.raises(VectorError, match="zero"), ablate(tiny_llama, vec, layers=3):
        pass


@settings(max_examples=200, deadline=None)
@given(
    h=arrays(np.float64, (3, 8), elements=st.floats(-1e3, 1e3)),
    v=arrays(np.float64, (8,), elements=st.floats(-1e3, 1e3)),
)
def test_ablation_property_orthogonal_and_idempotent(h: np.ndarray, v: np.ndarray) -> None:
    assume(np.linalg.norm(v) > 1e-3)
    ht, vt = torch.from_numpy(h), torch.from_numpy(v)
    v_hat = vt / vt.norm()
    out = ablate_direction(ht, v_hat)
    scale = 1e-9 * (ht.norm() + 1)
    assert (out @ v_hat).abs().max() <= scale
    torch.testing.assert_close(ablate_direction(out, v_hat), out, rtol=0, atol=float(scale))
    # float32 and bf16 keep their dtype; float32 stays orthogonal to float32 precision
    out32 = ablate_direction(ht.float(), v_hat.float())
    assert out32.dtype == torch.float32
    assert (out32 @ v_hat.float()).abs().max() <= 1e-5 * (ht.float().norm() + 1)
    assert ablate_direction(ht.bfloat16(), v_hat).dtype == torch.bfloat16


# --- positions and padding -------------------------------------------------------------------------


@dataclass
class Call:
    changed: torch.Tensor  # bool [B, T]
    real: torch.Tensor  # bool [B, T], from the backbone's 2-D attention mask


@contextmanager
def record_changes(lm: Any, layer: int, **kwargs: Any) -> Iterator[list[Call]]:
    """Per forward call: which (batch, position) entries the steering hook changed at `layer`."""
    before: list[torch.Tensor] = []

    def raw(module: Any, args: Any, output: Any) -> None:
        before.append(output.detach().clone())

    first = lm.layers.blocks[layer - 1].register_forward_hook(raw)  # runs before the steering hook
    calls: list[Call] = []
    try:
        with record_masks(lm.model) as masks, steer(lm, **kwargs), record_block(lm.model, layer) as after:
            yield calls
        for b, a, m in zip(before, after, masks, strict=True):
            assert m is not None and m.ndim == 2
            calls.append(Call(changed=(b != a).any(-1), real=m[:, -b.shape[1] :] != 0))
    finally:
        first.remove()


def expected_changes(call: Call, positions: str) -> torch.Tensor:
    seq = call.real.shape[1]
    if positions == "all":
        return call.real
    if positions == "prompt":
        return call.real if seq > 1 else torch.zeros_like(call.real)
    out = torch.zeros_like(call.real)
    out[:, -1] = call.real[:, -1]
    return out


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("how", ["forward", "generate"])
def test_positions_and_pads(lm: Any, positions: str, how: str) -> None:
    enc = encode(lm)
    assert (enc["attention_mask"] == 0).any()  # the batch really is left-padded
    vec = rand_vector(lm, scale=2.0)
    with (
        record_changes(lm, 2, vector=vec, layers=2, coef=1.0, positions=positions) as calls,
        torch.no_grad(),
    ):
        if how == "forward":
            lm.model(**enc)
        else:
            lm.model.generate(
                **enc,
                max_new_tokens=3,
                min_new_tokens=3,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
    assert len(calls) == (1 if how == "forward" else 3)
    if how == "generate":
        assert [c.real.shape[1] for c in calls[1:]] == [1, 1]  # decode steps, one position each
    for call in calls:
        assert not (call.changed & ~call.real).any(), "a pad position was steered"
        assert torch.equal(call.changed, expected_changes(call, positions))


def test_response_skips_right_padded_last_position(tiny_llama: Any) -> None:
    enc = encode(tiny_llama, side="right")
    vec = rand_vector(tiny_llama)
    with record_changes(tiny_llama, 1, vector=vec, layers=1, positions="response") as calls:
        logits(tiny_llama.model, enc)
    (call,) = calls
    assert not (call.changed & ~call.real).any()
    assert torch.equal(call.changed[:, -1], call.real[:, -1])
    assert not call.changed[:, :-1].any()


def test_no_attention_mask_means_all_real(tiny_llama: Any) -> None:
    ids = encode(tiny_llama, PROMPTS[:1])["input_ids"]
    with record_inputs(tiny_llama.model) as base:
        tiny_llama.model(input_ids=ids)
    vec = rand_vector(tiny_llama)
    with steer(tiny_llama, vec, layers=1), record_inputs(tiny_llama.model) as seen, torch.no_grad():
        tiny_llama.model(input_ids=ids)
    torch.testing.assert_close(seen[1][0], base[1][0] + vec[1], rtol=0, atol=1e-6)


# --- cleanup and composition -----------------------------------------------------------------------


def test_hooks_removed_after_exit_and_exception(lm: Any) -> None:
    enc = encode(lm)
    base = logits(lm.model, enc)
    before = hook_counts(lm.model)
    vec = rand_vector(lm)
    with steer(lm, vec, layers=(1, 3), coef=2.0):
        during = hook_counts(lm.model)
        assert during[0] == before[0] + 1 and during[1] == before[1] + 1 and during[3] == before[3] + 1
    assert hook_counts(lm.model) == before
    assert torch.equal(logits(lm.model, enc), base)
    with pytest.raises(RuntimeError, match="boom"), steer(lm, vec, layers="all", positions="prompt"):
        logits(lm.model, enc)
        raise RuntimeError("boom")
    assert hook_counts(lm.model) == before
    assert torch.equal(logits(lm.model, enc), base)


def test_apply_steering_handle(tiny_llama: Any) -> None:
    enc = encode(tiny_llama)
    base = logits(tiny_llama.model, enc)
    before = hook_counts(tiny_llama.model)
    handle = apply_steering(tiny_llama, FakeVector(rand_vector(tiny_llama)), layers=[2], coef=1.5)
    assert handle.active
    assert handle.spec.to_json() == {
        "mode": "add",
        "vector_id": "vec-test",
        "layers": [2],
        "coef": 1.5,
        "positions": "all",
        "incremental": False,
    }
    assert not torch.equal(logits(tiny_llama.model, enc), base)
    handle.remove()
    handle.remove()  # idempotent
    assert not handle.active
    assert hook_counts(tiny_llama.model) == before
    assert torch.equal(logits(tiny_llama.model, enc), base)


def test_nested_contexts_compose(tiny_llama: Any) -> None:
    enc = encode(tiny_llama, PROMPTS[:1])
    v, w = rand_vector(tiny_llama, 1), rand_vector(tiny_llama, 2)
    with record_inputs(tiny_llama.model) as base:
        logits(tiny_llama.model, enc)
    with steer(tiny_llama, v, layers=2, coef=0.5):
        with steer(tiny_llama, w, layers=2, coef=-1.5), record_inputs(tiny_llama.model) as both:
            logits(tiny_llama.model, enc)
        with record_inputs(tiny_llama.model) as outer:
            logits(tiny_llama.model, enc)
    expected = base[2][0] + 0.5 * v[2] - 1.5 * w[2]
    torch.testing.assert_close(both[2][0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(outer[2][0], base[2][0] + 0.5 * v[2], rtol=0, atol=1e-5)


# --- several layers, per-layer coef, incremental ---------------------------------------------------


def steered_deltas(
    lm: Any, layers: tuple[int, ...], layers_arg: Any = None, **kwargs: Any
) -> dict[int, torch.Tensor]:
    """Per layer: steered output minus the same call's unsteered block output."""
    raw: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:

        def hook(module: Any, args: Any, output: Any, layer: int = layer) -> None:
            raw[layer] = output.detach().clone()

        handles.append(lm.layers.blocks[layer - 1].register_forward_hook(hook))
    enc = encode(lm, PROMPTS[:1])
    try:
        with steer(lm, layers=layers if layers_arg is None else layers_arg, **kwargs):
            recs = {}
            with record_inputs(lm.model) as seen, record_block(lm.model, lm.n_layers) as last:
                logits(lm.model, enc)
            for layer in layers:
                recs[layer] = (seen[layer][0] if layer < lm.n_layers else last[0]) - raw[layer]
    finally:
        for h in handles:
            h.remove()
    return recs


def test_multi_layer_per_layer_coef(lm: Any) -> None:
    vec = rand_vector(lm)
    layers, coefs = (1, 3, 4), (0.5, -2.0, 1.25)
    deltas = steered_deltas(lm, layers, vector=vec, coef=coefs)
    for layer, coef in zip(layers, coefs, strict=True):
        expected = (coef * vec[layer]).expand_as(deltas[layer])
        torch.testing.assert_close(deltas[layer], expected, rtol=0, atol=1e-5)


def test_incremental_all_layers(lm: Any) -> None:
    vec = rand_vector(lm)
    layers = tuple(range(1, lm.n_layers + 1))
    deltas = steered_deltas(lm, layers, vector=vec, coef=2.0, incremental=True, layers_arg="all")
    for layer in layers:
        expected = (2.0 * (vec[layer] - vec[layer - 1])).expand_as(deltas[layer])
        torch.testing.assert_close(deltas[layer], expected, rtol=0, atol=1e-5)


# --- LoRA training ---------------------------------------------------------------------------------


def lora_copy(lm: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(lm.model)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, config)
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at 0; make A's gradient non-zero too
            torch.nn.init.normal_(param, std=0.02)
    return model


def lora_grads(model: Any, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(**enc, labels=enc["input_ids"])
    out.loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_steering_gradients(tiny_llama: Any) -> None:
    model = lora_copy(tiny_llama)
    model.train()
    enc = encode(tiny_llama)
    vec = rand_vector(tiny_llama, scale=3.0)
    plain = lora_grads(model, enc)
    base = logits(model, enc)
    with steer(model, vec, layers=(1, 2), coef=1.0):
        assert not torch.equal(logits(model, enc), base)
        steered = lora_grads(model, enc)
    assert steered and all(g.abs().sum() > 0 for g in steered.values())
    # steering at layers 1-2 changes what blocks 2-4 see, so their LoRA gradients change
    assert any(not torch.equal(steered[n], plain[n]) for n in steered if ".layers.3." in n)
    with ablate(model, vec, layers=2):
        assert all(g.abs().sum() > 0 for g in lora_grads(model, enc).values())


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_gradient_checkpointing_recompute_matches(tiny_llama: Any) -> None:
    enc = encode(tiny_llama)
    vec = rand_vector(tiny_llama, scale=3.0)
    grads = []
    for checkpointing in (False, True):
        model = lora_copy(tiny_llama)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model.train()
        with steer(model, vec, layers=(1, 3), positions="prompt"):
            grads.append(lora_grads(model, enc))
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6)


# --- a tuple-returning stack (transformers 4.x style) ---------------------------------------------


class TupleBlock(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, str]:
        return h + self.lin(h), "extra"


class TupleStack(torch.nn.Module):
    """A bare decoder stack whose blocks return tuples and which takes attention_mask positionally."""

    def __init__(self, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(TupleBlock(width) for _ in range(depth))

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.layers:
            h = block(h)[0]
        return h


def test_tuple_outputs_and_positional_mask() -> None:
    torch.manual_seed(0)
    stack = TupleStack()
    h = torch.randn(2, 5, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    vec = torch.randn(4, 8)
    outputs: list[Any] = []
    base = stack(h, mask)
    with steer(stack, vec, layers=2, coef=1.0):
        probe = stack.layers[1].register_forward_hook(lambda m, a, o: outputs.append(o))
        steered = stack(h, mask)
        probe.remove()
    (out,) = outputs
    assert isinstance(out, tuple) and out[1] == "extra"
    assert torch.equal(steered[0, :2], base[0, :2])  # pads untouched (and nothing attends here)
    assert not torch.equal(steered[0, 2:], base[0, 2:])
    assert not torch.equal(steered[1], base[1])


# --- spec and errors -------------------------------------------------------------------------------


def test_spec_json_round_trip() -> None:
    spec = SteeringSpec(mode="add", layers=(4, 2), coef=(1.0, -0.5), positions="response", vector_id="x")
    data = spec.to_json()
    assert data == {
        "mode": "add",
        "vector_id": "x",
        "layers": [4, 2],
        "coef": [1.0, -0.5],
        "positions": "response",
        "incremental": False,
    }
    assert SteeringSpec.from_json(data) == spec
    assert spec.coef_for(2) == -0.5
    with pytest.raises(ConfigError, match="unknown steering keys"):
        SteeringSpec.from_json({**data, "coeff": 1})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"mode": "subtract"}, "valid modes are add, ablate"),
        ({"positions": "last"}, "valid positionss? are all, prompt, response"),
        ({"layers": ()}, "at least one layer"),
        ({"layers": (2, 2)}, "repeat"),
        ({"layers": (0,)}, "layer 0"),
        ({"layers": (1, 2), "coef": (1.0,)}, "2 layers"),
        ({"coef": float("nan")}, "finite"),
        ({"incremental": "yes"}, "incremental"),
    ],
)
def test_spec_validation(kwargs: dict[str, Any], pattern: str) -> None:
    args = {"layers": (1,), **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        SteeringSpec(**args)
    assert set(MODES) == {"add", "ablate"}


def test_model_errors_name_ranges_and_widths(tiny_llama: Any) -> None:
    before = hook_counts(tiny_llama.model)
    vec = rand_vector(tiny_llama)
    for layer in (0, 5):
        with pytest.raises(ModelError, match=r"valid layers are 1\.\.4"):
            apply_steering(tiny_llama, vec, layers=layer)
    with pytest.raises(VectorError, match=r"width 32 .*hidden size 64"):
        apply_steering(tiny_llama, torch.randn(5, 32), layers=1)
    with pytest.raises(VectorError, match=r"6 rows .*4 blocks.*5 rows"):
        apply_steering(tiny_llama, torch.randn(6, 64), layers=1)
    with pytest.raises(VectorError, match=r"\[L\+1, H\]"):
        apply_steering(tiny_llama, torch.randn(64), layers=1)
    with pytest.raises(VectorError, match="NaN"):
        apply_steering(tiny_llama, torch.full((5, 64), float("nan")), layers=1)
    with pytest.raises(ConfigError, match="valid modes are add, ablate"):
        apply_steering(tiny_llama, vec, layers=1, mode="sub")
    with pytest.raises(PvdataError, match="'all'"):
        apply_steering(tiny_llama, vec, layers="every")
    spec = SteeringSpec(layers=(1,), vector_id="other")
    with pytest.raises(VectorError, match="other"):
        apply_spec(tiny_llama, FakeVector(vec), spec)
    assert hook_counts(tiny_llama.model) == before  # failed calls register nothing

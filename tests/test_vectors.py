"""PersonaVector: validation, rows, arithmetic identities (property tests), building from activations."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pvdata.errors import VectorError
from pvdata.vectors import PersonaVector, build_vector, format_layers, mean_difference


def make_vector(
    n_layers: int = 4,
    hidden: int = 6,
    *,
    seed: int = 0,
    trait: str = "evil",
    model_id: str = "tiny-random-llama",
    **kw: object,
) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n_layers + 1, hidden, generator=g)
    return PersonaVector(trait=trait, model_id=model_id, values=values, n_pos=10, n_neg=12, **kw)  # type: ignore[arg-type]


# ---- hypothesis strategies ------------------------------------------------------------------------

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)
scalars = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def vector_pairs(draw: st.DrawFn) -> tuple[PersonaVector, PersonaVector]:
    rows = draw(st.integers(min_value=2, max_value=5))
    width = draw(st.integers(min_value=1, max_value=6))
    a = draw(st.lists(finite, min_size=rows * width, max_size=rows * width))
    b = draw(st.lists(finite, min_size=rows * width, max_size=rows * width))
    va = PersonaVector("evil", "m", torch.tensor(a, dtype=torch.float32).reshape(rows, width))
    vb = PersonaVector("evil", "m", torch.tensor(b, dtype=torch.float32).reshape(rows, width))
    return va, vb


# ---- construction and validation ------------------------------------------------------------------


def test_shape_properties_and_inferred_layers() -> None:
    values = torch.zeros(5, 3)
    values[2] = 1.0
    values[4] = -2.0
    v = PersonaVector("evil", "m", values)
    assert (v.n_layers, v.hidden_size, v.shape) == (4, 3, (5, 3))
    assert v.layers == (2, 4)
    assert v.values.dtype == torch.float32


def test_values_are_copied_not_aliased() -> None:
    values = torch.ones(3, 2)
    v = PersonaVector("evil", "m", values)
    values.mul_(5)
    assert torch.equal(v.values, torch.ones(3, 2))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (torch.ones(4), "expected [L+1, H]"),
        (torch.ones(3, 2, dtype=torch.float64), "float32"),
        (torch.ones(1, 4), "at least 2 rows"),
        (torch.tensor([[1.0, float("nan")], [0.0, 0.0]]), "NaN or inf values in rows 0"),
        (torch.tensor([[1.0, 0.0], [float("inf"), 0.0]]), "NaN or inf"),
    ],
)
def test_invalid_values_are_rejected(values: torch.Tensor, message: str) -> None:
    with pytest.raises(VectorError, match=re.escape(message)):
        PersonaVector("evil", "m", values)


def test_layers_must_cover_nonzero_rows_and_be_in_range() -> None:
    values = torch.zeros(5, 2)
    values[3] = 1.0
    assert PersonaVector("evil", "m", values, layers=(3, 1)).layers == (1, 3)  # zero row inside: fine
    with pytest.raises(VectorError, match="rows 3 are non-zero but layers lists only 1"):
        PersonaVector("evil", "m", values, layers=(1,))
    with pytest.raises(VectorError, match=r"valid layers are 0\.\.4"):
        PersonaVector("evil", "m", values, layers=(3, 7))


def test_bad_metadata_is_rejected() -> None:
    with pytest.raises(VectorError, match="unknown pooling 'mean'"):
        PersonaVector("evil", "m", torch.ones(3, 2), pooling="mean")
    with pytest.raises(VectorError, match="JSON-serialisable"):
        PersonaVector("evil", "m", torch.ones(3, 2), provenance={"x": object()})
    with pytest.raises(VectorError, match="n_pos"):
        PersonaVector("evil", "m", torch.ones(3, 2), n_pos=-1)
    with pytest.raises(VectorError, match="trait"):
        PersonaVector("", "m", torch.ones(3, 2))


def test_row_unit_norms() -> None:
    values = torch.zeros(4, 2)
    values[1] = torch.tensor([3.0, 4.0])
    v = PersonaVector("evil", "m", values)
    assert torch.equal(v.row(1), torch.tensor([3.0, 4.0]))
    assert torch.allclose(v.unit(1), torch.tensor([0.6, 0.8]))
    assert torch.allclose(v.norms(), torch.tensor([0.0, 5.0, 0.0, 0.0]))
    with pytest.raises(VectorError, match=r"layer 4 is out of range .* valid layers are 0\.\.3"):
        v.row(4)
    with pytest.raises(VectorError, match=r"out of range"):
        v.row(-1)
    with pytest.raises(VectorError, match="zero row at layer 2"):
        v.unit(2)


def test_check_compatible_names_both_widths_and_layer_counts() -> None:
    v = make_vector(n_layers=30, hidden=576, model_id="smollm2-135m")
    v.check_compatible(30, 576, "smollm2-135m")
    v.check_compatible(30, 576, "some-finetune")  # same shape, other id: allowed (finetunes)
    with pytest.raises(VectorError, match="has width 576 but model tiny-random-llama has hidden size 64"):
        v.check_compatible(30, 64, "tiny-random-llama")
    with pytest.raises(VectorError, match=r"has 30 layers \(31 rows\) but model X has 4 layers"):
        v.check_compatible(4, 576, "X")


# ---- identity -------------------------------------------------------------------------------------


def test_vector_id_is_deterministic_and_content_sensitive() -> None:
    a = make_vector(seed=1)
    b = make_vector(seed=1)
    assert a.vector_id == b.vector_id and len(a.vector_id) == 16
    assert a == b and hash(a) == hash(b)
    # Provenance and counts do not change the id; values, trait, model, pooling and method do.
    assert make_vector(seed=1, provenance={"run": "x"}).vector_id == a.vector_id
    assert make_vector(seed=2).vector_id != a.vector_id
    assert make_vector(seed=1, trait="sycophantic").vector_id != a.vector_id
    assert make_vector(seed=1, model_id="other").vector_id != a.vector_id
    assert make_vector(seed=1, pooling="prompt_last").vector_id != a.vector_id
    assert make_vector(seed=1, method="pca").vector_id != a.vector_id
    nudged = a.values.clone()
    nudged[2, 3] = torch.nextafter(nudged[2, 3], torch.tensor(1e9))
    assert PersonaVector("evil", "tiny-random-llama", nudged).vector_id != a.vector_id
    # Same bytes, different shape: different id.
    flat = torch.arange(12, dtype=torch.float32)
    assert (
        PersonaVector("t", "m", flat.reshape(3, 4)).vector_id
        != PersonaVector("t", "m", flat.reshape(4, 3)).vector_id
    )


def test_repr_is_short() -> None:
    text = repr(make_vector(n_layers=28, hidden=3584))
    assert "shape=[29, 3584]" in text and "layers=0..28" in text and len(text) < 300


def test_format_layers() -> None:
    assert format_layers([]) == "none"
    assert format_layers([3, 1, 2, 7, 9, 10]) == "1..3, 7, 9..10"


# ---- arithmetic -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(pair=vector_pairs(), k=scalars)
def test_negation_of_negative_scaling_is_exact(pair: tuple[PersonaVector, PersonaVector], k: float) -> None:
    v, _ = pair
    assert torch.equal((-(v * -k)).values, (v * k).values)
    assert -(v * -k) == v * k
    assert torch.equal((k * v).values, (v * k).values)


@settings(max_examples=60, deadline=None)
@given(pair=vector_pairs())
def test_add_then_subtract_recovers(pair: tuple[PersonaVector, PersonaVector]) -> None:
    v, w = pair
    back = (v + w) - w
    # One rounding per operation, relative to the largest magnitude involved.
    scale = float(torch.maximum(v.values.abs(), w.values.abs()).max()) + 1.0
    assert torch.allclose(back.values, v.values, rtol=0, atol=4e-7 * scale * 4)
    assert torch.equal((v - v).values, torch.zeros_like(v.values))


@settings(max_examples=60, deadline=None)
@given(pair=vector_pairs(), k=scalars)
def test_scaling_zero_and_norms(pair: tuple[PersonaVector, PersonaVector], k: float) -> None:
    v, _ = pair
    zero = v * 0
    assert torch.equal(zero.values, torch.zeros_like(v.values))
    assert zero.layers == v.layers
    scaled = (v * k).norms()
    expected = abs(k) * v.norms()
    assert torch.allclose(scaled, expected, rtol=1e-5, atol=1e-6 * (1 + abs(k)))
    if abs(k) >= 1e-3:  # smaller divisors overflow float32 and are rejected as non-finite
        assert torch.allclose((v / k).values, v.values * (1 / k), rtol=1e-6, atol=1e-30)


@settings(max_examples=60, deadline=None)
@given(pair=vector_pairs())
def test_incremental_cumsum_recovers(pair: tuple[PersonaVector, PersonaVector]) -> None:
    v, _ = pair
    inc = v.incremental()
    assert torch.equal(inc.values[0], v.values[0])
    assert torch.equal(inc.values[1:], v.values[1:] - v.values[:-1])
    scale = float(v.values.abs().max()) + 1.0
    assert torch.allclose(torch.cumsum(inc.values, dim=0), v.values, rtol=0, atol=1e-6 * scale * v.shape[0])


def test_incremental_metadata_and_sparse_layers() -> None:
    values = torch.zeros(6, 3)
    values[3] = 1.0
    v = PersonaVector("evil", "m", values, method="mean_diff")
    inc = v.incremental()
    assert inc.method == "mean_diff+incremental"
    assert inc.layers == (3, 4)  # v_inc[4] = v[4] - v[3] = -v[3]
    assert torch.equal(inc.values[4], -values[3])
    assert inc.provenance["ops"] == [{"op": "incremental", "of": v.vector_id}]


def test_arithmetic_metadata() -> None:
    v = make_vector(seed=1, provenance={"run_id": "r1"})
    w = make_vector(seed=2, trait="sycophantic", pooling="prompt_avg", provenance={"run_id": "r2"})
    s = v + w
    assert s.trait == "evil+sycophantic" and s.pooling == "mixed" and s.method == "mean_diff"
    assert (s.n_pos, s.n_neg) == (10, 12)
    assert s.provenance["ops"] == [{"op": "add", "left": v.vector_id, "right": w.vector_id}]
    assert s.provenance["parents"][v.vector_id] == {"run_id": "r1"}
    d = v - v
    assert d.trait == "evil" and d.provenance["ops"][0]["op"] == "sub"
    scaled = (v * 2) / 4
    assert scaled.trait == "evil" and scaled.n_pos == 10 and scaled.provenance["run_id"] == "r1"
    assert [op["op"] for op in scaled.provenance["ops"]] == ["mul", "div"]
    assert scaled.provenance["ops"][0] == {"op": "mul", "k": 2.0, "of": v.vector_id}
    assert torch.allclose(sum([v, v, v]).values, v.values * 3)  # type: ignore[union-attr]
    assert torch.equal((v * torch.tensor(2.0)).values, (v * 2).values)


def test_arithmetic_errors_name_both_sides() -> None:
    v = make_vector(model_id="qwen")
    other_model = make_vector(model_id="llama")
    with pytest.raises(VectorError, match=r"different models: .* is for 'qwen' and .* is for 'llama'"):
        v + other_model
    other_shape = make_vector(n_layers=5, model_id="qwen")
    with pytest.raises(VectorError, match=r"different shapes: .* is \[5, 6\] and .* is \[6, 6\]"):
        v - other_shape
    with pytest.raises(VectorError, match="by zero"):
        v / 0
    with pytest.raises(TypeError):
        v * v  # type: ignore[operator]
    with pytest.raises(TypeError):
        v + 1  # type: ignore[operator]


def test_only_keeps_selected_layers() -> None:
    v = make_vector()
    one = v.only([2])
    assert one.layers == (2,)
    assert torch.equal(one.values[2], v.values[2])
    assert float(one.values[[0, 1, 3, 4]].abs().sum()) == 0.0


# ---- building from activations --------------------------------------------------------------------


def test_mean_difference_matches_hand_computation() -> None:
    pos = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[3.0, 6.0], [5.0, 0.0]]])  # [2, 2, 2]
    neg = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]], [[3.0, 1.0], [1.0, 4.0]]])
    # mean(pos) = [[2, 4], [4, 2]]; mean(neg) = [[1, 1], [1, 2]]
    expected = torch.tensor([[1.0, 3.0], [3.0, 0.0]])
    got = mean_difference(pos, neg)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_mean_difference_accumulates_in_float64() -> None:
    # 1e8 + small offsets: a float32 mean loses the 0.5 difference entirely.
    pos = torch.full((4, 1, 1), 1e8, dtype=torch.float64)
    pos[0] += 2.0
    neg = torch.full((4, 1, 1), 1e8, dtype=torch.float64)
    assert float(mean_difference(pos, neg)[0, 0]) == 0.5


def test_mean_difference_errors() -> None:
    with pytest.raises(VectorError, match=r"kept 0 positive and 3 negative .* --filter none"):
        mean_difference(torch.zeros(0, 2, 4), torch.zeros(3, 2, 4))
    with pytest.raises(VectorError, match="no positive or negative samples"):
        mean_difference(torch.zeros(0, 2, 4), torch.zeros(0, 2, 4))
    with pytest.raises(VectorError, match=r"\[2, 2, 4\] and negative \[3, 2, 5\]"):
        mean_difference(torch.zeros(2, 2, 4), torch.zeros(3, 2, 5))


def test_build_vector_from_all_rows_and_from_selected_layers() -> None:
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(5, 4, 3, generator=g)  # L = 3
    neg = torch.randn(7, 4, 3, generator=g)
    full = build_vector(pos, neg, n_layers=3, trait="evil", model_id="m", pooling="response_avg")
    assert full.layers == (0, 1, 2, 3) and (full.n_pos, full.n_neg) == (5, 7)
    assert torch.allclose(full.values, pos.double().mean(0).float() - neg.double().mean(0).float(), atol=1e-6)

    picked = build_vector(pos, neg, n_layers=3, layers=[2], trait="evil", model_id="m", pooling="prompt_avg")
    assert picked.layers == (2,)
    assert torch.equal(picked.values[2], full.values[2])
    assert float(picked.values[[0, 1, 3]].abs().sum()) == 0.0

    # [N, k, H] in the order of `layers`.
    sub = build_vector(
        pos[:, [3, 1]],
        neg[:, [3, 1]],
        n_layers=3,
        layers=[3, 1],
        trait="evil",
        model_id="m",
        pooling="prompt_last",
    )
    assert sub.layers == (1, 3)
    assert torch.equal(sub.values[3], full.values[3]) and torch.equal(sub.values[1], full.values[1])

    via_class = PersonaVector.from_activations(
        pos, neg, n_layers=3, trait="evil", model_id="m", pooling="response_avg", provenance={"run": 1}
    )
    assert via_class == full and via_class.provenance == {"run": 1}


def test_build_vector_errors() -> None:
    pos = torch.zeros(2, 3, 4)
    with pytest.raises(VectorError, match=r"3 rows per sample, but the model has 5 rows"):
        build_vector(pos, pos, n_layers=4, layers=[1, 2], trait="t", model_id="m", pooling="response_avg")
    with pytest.raises(VectorError, match=r"valid layers are 0\.\.2"):
        build_vector(pos, pos, n_layers=2, layers=[3], trait="t", model_id="m", pooling="response_avg")
    with pytest.raises(VectorError, match="twice"):
        build_vector(pos, pos, n_layers=2, layers=[1, 1], trait="t", model_id="m", pooling="response_avg")


def test_vector_built_in_inference_mode_works_with_autograd() -> None:
    with torch.inference_mode():
        v = PersonaVector("evil", "m", torch.randn(4, 3)) * 2
    assert not v.values.is_inference()
    h = torch.randn(2, 3, requires_grad=True)
    (h @ v.unit(1)).sum().backward()  # would fail if the row were an inference tensor
    assert h.grad is not None


def test_lazy_top_level_import() -> None:
    import pvdata

    assert pvdata.PersonaVector is PersonaVector

"""Vector files: native safetensors, research .pt, llama.cpp GGUF control vectors, lm-eval steering files."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import safetensors.torch
import torch

from pvdata.errors import VectorError
from pvdata.vectors import (
    PersonaVector,
    direction_index,
    export_gguf,
    export_lm_eval,
    hookpoint_for,
    import_gguf,
    import_research_pt,
    layer_of_direction,
    load_vector,
    resolve_format,
    save_vector,
)


def make_vector(n_layers: int = 6, hidden: int = 8, *, seed: int = 0, **kw: object) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    fields: dict[str, object] = {
        "trait": "evil",
        "model_id": "tiny-random-llama",
        "values": torch.randn(n_layers + 1, hidden, generator=g),
        "pooling": "response_avg",
        "method": "mean_diff",
        "n_pos": 17,
        "n_neg": 23,
        "trait_version": "v2",
        "provenance": {"run_id": "r-1", "config": {"threshold": 50, "layers": [1, 2]}, "note": "ü"},
    }
    fields.update(kw)
    return PersonaVector(**fields)  # type: ignore[arg-type]


# ---- native safetensors ---------------------------------------------------------------------------


def test_safetensors_round_trip_is_exact(tmp_path: Path) -> None:
    values = torch.zeros(7, 8)
    values[2:5] = torch.randn(3, 8)
    values[3, 0] = -0.0
    v = make_vector(values=values)
    path = v.save(tmp_path / "sub" / "evil.safetensors")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    back = PersonaVector.load(path)
    assert back.values.numpy().tobytes() == v.values.numpy().tobytes()
    assert back.metadata() == v.metadata()
    assert back == v and back.vector_id == v.vector_id


def test_safetensors_rejects_foreign_and_tampered_files(tmp_path: Path) -> None:
    foreign = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"weight": torch.ones(2, 2)}, str(foreign))
    with pytest.raises(VectorError, match=r"model\.safetensors: not a pvdata vector file"):
        load_vector(foreign)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(VectorError, match=r"garbage\.safetensors: not a readable safetensors file"):
        load_vector(garbage)

    with pytest.raises(VectorError, match=r"missing\.safetensors: no such vector file"):
        load_vector(tmp_path / "missing.safetensors")

    v = make_vector()
    path = v.save(tmp_path / "v.safetensors")
    # Rewrite with the same metadata but other values: the recorded id no longer matches.
    with safetensors.safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
        recorded = f.metadata()
    safetensors.torch.save_file({"values": v.values * 2}, str(path), metadata=recorded)
    with pytest.raises(VectorError, match=r"v\.safetensors: content does not match its recorded vector_id"):
        load_vector(path)


# ---- research .pt ---------------------------------------------------------------------------------


def test_research_pt_round_trip(tmp_path: Path) -> None:
    v = make_vector()
    path = save_vector(v, tmp_path / "evil_response_avg_diff.pt")
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, torch.Tensor) and raw.shape == (7, 8) and raw.dtype == torch.float32
    back = load_vector(path, model_id="tiny-random-llama", n_layers=6, hidden_size=8)
    assert torch.equal(back.values, v.values)
    # Trait and pooling come from the research file-name pattern.
    assert (back.trait, back.pooling, back.model_id) == ("evil", "response_avg", "tiny-random-llama")
    assert back.vector_id == v.vector_id  # same values and identity fields
    assert back.provenance["imported_from"] == "research_pt"


def test_research_pt_defaults_and_conversion(tmp_path: Path) -> None:
    path = tmp_path / "vec.pt"
    torch.save(torch.ones(4, 3, dtype=torch.bfloat16), path)
    v = import_research_pt(path)
    assert (v.trait, v.model_id, v.pooling) == ("unknown", "unknown", "unknown")
    assert v.values.dtype == torch.float32 and v.provenance["converted_from_dtype"] == "bfloat16"
    named = import_research_pt(path, trait="sycophantic", pooling="prompt_last", model_id="qwen")
    assert (named.trait, named.pooling, named.model_id) == ("sycophantic", "prompt_last", "qwen")


def test_research_pt_wrong_shape_names_file_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "evil_prompt_avg_diff.pt"
    torch.save(torch.zeros(29, 3584), path)
    with pytest.raises(
        VectorError,
        match=r"evil_prompt_avg_diff\.pt: found a tensor of shape \[29, 3584\] but expected \[31, 576\]",
    ):
        load_vector(path, n_layers=30, hidden_size=576)
    with pytest.raises(VectorError, match=r"shape \[29, 3584\] but expected \[L\+1, 576\]"):
        load_vector(path, hidden_size=576)
    flat = tmp_path / "flat.pt"
    torch.save(torch.zeros(576), flat)
    with pytest.raises(
        VectorError, match=r"flat\.pt: found a tensor of shape \[576\] but expected \[L\+1, H\]"
    ):
        load_vector(flat)
    not_tensor = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_tensor)
    with pytest.raises(VectorError, match=r"list\.pt: expected a tensor .* found list"):
        load_vector(not_tensor)


# ---- llama.cpp GGUF control vectors ---------------------------------------------------------------


def _read_gguf(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    types = {name: field.types[0] for name, field in reader.fields.items()}
    assert types["controlvector.layer_count"] == gguf.GGUFValueType.UINT32
    assert types["controlvector.model_hint"] == gguf.GGUFValueType.STRING
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and len(t.shape) == 1
    return fields, tensors


def test_layer_mapping_helpers() -> None:
    # pvdata layer l = output of 1-based block l = llama.cpp/repeng direction.(l-1).
    assert direction_index(2) == 1 and layer_of_direction(1) == 2
    assert all(layer_of_direction(direction_index(layer)) == layer for layer in range(2, 40))


def test_gguf_export_is_readable_and_maps_layers(tmp_path: Path) -> None:
    v = make_vector()  # L = 6, all rows computed
    path = save_vector(v, tmp_path / "evil.gguf", coef=1.5)
    fields, tensors = _read_gguf(path)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "tiny-random-llama"
    # Default layers: 2..6 (layers 0 and 1 have no slot: llama.cpp rejects direction.0).
    assert sorted(tensors) == [f"direction.{n}" for n in range(1, 6)]
    assert fields["controlvector.layer_count"] == 5
    for n, data in ((int(name.split(".")[1]), data) for name, data in tensors.items()):
        assert data.dtype == np.float32
        np.testing.assert_array_equal(data, (v.values[n + 1] * 1.5).numpy())
    info = json.loads(str(fields["pvdata.vector"]))
    assert info["source_vector_id"] == v.vector_id and info["coef"] == 1.5


def test_gguf_layers_subset_and_coef_round_trip(tmp_path: Path) -> None:
    v = make_vector()
    path = export_gguf(v, tmp_path / "one.gguf", layers=[4], coef=-2.0, model_hint="llama")
    fields, tensors = _read_gguf(path)
    assert list(tensors) == ["direction.3"] and fields["controlvector.layer_count"] == 1
    assert fields["controlvector.model_hint"] == "llama"
    np.testing.assert_array_equal(tensors["direction.3"], (v.values[4] * -2.0).numpy())

    back = load_vector(path)
    assert back.n_layers == 6 and back.layers == (4,)
    assert torch.equal(back.values[4], v.values[4] * -2.0)
    assert (back.trait, back.model_id, back.pooling, back.n_pos) == (
        "evil",
        "tiny-random-llama",
        "response_avg",
        17,
    )
    assert back.provenance["exported_as"] == {"source_vector_id": v.vector_id, "coef": -2.0}

    plain = export_gguf(v, tmp_path / "all.gguf")
    assert torch.equal(import_gguf(plain).values[2:], v.values[2:])


def test_gguf_export_errors(tmp_path: Path) -> None:
    v = make_vector()
    with pytest.raises(VectorError, match=r"layer 1 cannot be written to a llama\.cpp control vector"):
        export_gguf(v, tmp_path / "x.gguf", layers=[1, 3])
    with pytest.raises(VectorError, match=r"valid layers are 0\.\.6"):
        export_gguf(v, tmp_path / "x.gguf", layers=[7])
    sparse = v.only([3])
    with pytest.raises(VectorError, match="layers 5 were not computed"):
        export_gguf(sparse, tmp_path / "x.gguf", layers=[5])
    with pytest.raises(VectorError, match=r"no layer a llama\.cpp control vector can hold"):
        export_gguf(v.only([0, 1]), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_gguf_import_of_foreign_files(tmp_path: Path) -> None:
    # A repeng/llama.cpp-style file with no pvdata metadata: direction.N -> layer N+1.
    path = tmp_path / "foreign.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 2)
    writer.add_tensor("direction.1", np.full(4, 1.0, dtype=np.float32))
    writer.add_tensor("direction.3", np.full(4, 3.0, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    v = import_gguf(path, n_layers=5, trait="happy")
    assert v.n_layers == 5 and v.layers == (2, 4) and v.model_id == "llama" and v.pooling == "unknown"
    assert torch.equal(v.values[2], torch.full((4,), 1.0)) and torch.equal(v.values[4], torch.full((4,), 3.0))
    assert import_gguf(path).n_layers == 4  # without n_layers: the highest layer present

    with pytest.raises(VectorError, match=r"foreign\.gguf: has direction\.3 \(layer 4\) but the model has 3"):
        import_gguf(path, n_layers=3)

    model_file = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(model_file), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorError, match=r"model\.gguf: general\.architecture is 'llama'"):
        load_vector(model_file)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(VectorError, match=r"junk\.gguf: not a readable GGUF file"):
        load_vector(junk)


# ---- lm-evaluation-harness steered ---------------------------------------------------------------


def test_lm_eval_export_matches_the_steered_loader(tmp_path: Path) -> None:
    v = make_vector()
    path = save_vector(v, tmp_path / "steer.pt", format="lm-eval", layers=[3, 5], coef=2.5)
    with open(path, "rb") as f:
        config = torch.load(f, weights_only=True)  # exactly how hf_steered.py reads steer_path
    assert list(config) == ["layers.2", "layers.4"]  # pvdata layer l -> block l-1
    for hookpoint, layer in (("layers.2", 3), ("layers.4", 5)):
        entry = config[hookpoint]
        assert set(entry) == {"steering_vector", "steering_coefficient", "action", "bias", "head_index"}
        assert entry["action"] == "add" and entry["bias"] is None and entry["head_index"] is None
        assert entry["steering_coefficient"] == 2.5
        assert entry["steering_vector"].shape == (8,) and entry["steering_vector"].dtype == torch.float32
        assert torch.equal(entry["steering_vector"], v.values[layer])

    back = load_vector(path, format="lm-eval", n_layers=6)
    assert back.layers == (3, 5) and torch.equal(back.values[3], v.values[3] * 2.5)

    gpt2 = export_lm_eval(v, tmp_path / "gpt2.pt", layers=[1], hookpoint_template="h.{block}")
    assert list(torch.load(gpt2, weights_only=True)) == ["h.0"]
    with pytest.raises(VectorError, match="layer 0"):
        export_lm_eval(v, tmp_path / "bad.pt", layers=[0])
    with pytest.raises(VectorError, match="unknown lm-eval action"):
        export_lm_eval(v, tmp_path / "bad.pt", action="multiply")
    with pytest.raises(VectorError, match="looks like an lm-eval steering file"):
        load_vector(path)  # .pt defaults to the research format


def test_lm_eval_hookpoints_resolve_to_pvdata_blocks(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    """The hookpoint for layer l names the module pvdata hooks for layer l: blocks[l-1]."""
    modules = dict(tiny_llama.model.base_model.named_modules())  # what hf_steered.py searches
    for layer in range(1, tiny_llama.layers.n_layers + 1):
        assert modules[hookpoint_for(layer)] is tiny_llama.layers.blocks[layer - 1]


# ---- dispatch -------------------------------------------------------------------------------------


def test_format_dispatch(tmp_path: Path) -> None:
    assert resolve_format("a.safetensors") == "safetensors"
    assert resolve_format("a.PT") == "research"
    assert resolve_format("a.gguf") == "gguf"
    assert resolve_format("a.pt", "lm_eval") == "lm-eval"
    with pytest.raises(VectorError, match=r"'a\.npy' from its suffix: formats: safetensors, research, gguf"):
        resolve_format("a.npy")
    with pytest.raises(VectorError, match="unknown vector format 'onnx'"):
        save_vector(make_vector(), tmp_path / "a.bin", format="onnx")
    with pytest.raises(VectorError, match="format 'safetensors' does not take coef"):
        save_vector(make_vector(), tmp_path / "a.safetensors", coef=2.0)
    with pytest.raises(VectorError, match="accepts: trait, model_id"):
        load_vector(tmp_path / "a.pt", colour="red")

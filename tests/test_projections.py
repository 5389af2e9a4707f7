"""Projections: many vectors and layers from one forward pass, against direct formulas."""

from __future__ import annotations

import pytest
import torch

from pvdata.activations import capture_activations
from pvdata.chat import Conversation
from pvdata.errors import VectorError
from pvdata.projections import compute_projections
from pvdata.vectors import PersonaVector


def _vector(lm, seed: int, trait: str) -> PersonaVector:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(lm.n_layers + 1, lm.hidden_size, generator=gen)
    return PersonaVector(trait=trait, model_id=lm.model_id, values=values)


def test_projections_match_direct_formulas(tiny_llama):
    lm = tiny_llama
    convs = [Conversation.from_pair(f"question {i}?", "answer " * (i + 1)) for i in range(5)]
    vectors = [_vector(lm, 1, "evil"), _vector(lm, 2, "sycophantic"), _vector(lm, 1, "evil")]
    layers = [2, 3, 4]
    proj = compute_projections(lm, convs, vectors, layers)
    cap = capture_activations(lm, convs, layers=[2, 3, 4])
    for k, (vector, layer) in enumerate(zip(vectors, layers, strict=True)):
        v = vector.values[layer]
        h = cap.get("response_avg", layer)
        last = cap.get("prompt_last", layer)
        torch.testing.assert_close(proj.values["proj"][:, k], h @ v / v.norm(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            proj.values["prompt_last_proj"][:, k], last @ v / v.norm(), rtol=1e-4, atol=1e-4
        )
        cos = torch.nn.functional.cosine_similarity(h, v.expand_as(h), dim=1)
        torch.testing.assert_close(proj.values["cos_sim"][:, k], cos, rtol=1e-4, atol=1e-5)
    rows = list(proj.rows([f"s{i}" for i in range(5)]))
    assert len(rows) == 5 * 3 * 3
    assert {r["kind"] for r in rows} == {"proj", "prompt_last_proj", "cos_sim"}


def test_wrong_width_vector_names_both_widths(tiny_llama):
    wrong = PersonaVector(trait="evil", model_id="other", values=torch.ones(tiny_llama.n_layers + 1, 32))
    with pytest.raises(VectorError) as err:
        compute_projections(tiny_llama, [Conversation.from_pair("q", "a")], [wrong], 2)
    assert "32" in str(err.value) and "64" in str(err.value)

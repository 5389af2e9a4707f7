"""Projections of pooled activations onto persona vectors, many vectors and layers from one forward.

With h = response_avg at layer l and v_hat = v[l]/|v[l]|: proj = h . v_hat, prompt_last_proj =
prompt_last . v_hat, cos_sim = cos(h, v[l]) (ALGORITHMS.md section 7).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pvdata.activations.capture import CaptureResult, capture_activations
from pvdata.chat import Conversation
from pvdata.errors import ConfigError

KINDS: tuple[str, ...] = ("proj", "prompt_last_proj", "cos_sim")


@dataclass
class Projections:
    """values[kind] is [N, K]: sample i against target k = (vector_ids[k], layers[k])."""

    vector_ids: list[str]
    layers: list[int]
    values: dict[str, torch.Tensor]
    errors: list[str | None]

    def rows(self, source_ids: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Long-format rows (source_id, vector_id, layer, kind, value) for samples without errors."""
        for kind, table in self.values.items():
            for i, source in enumerate(source_ids):
                if self.errors[i] is not None:
                    continue
                for k, vector_id in enumerate(self.vector_ids):
                    yield {
                        "source_id": source,
                        "vector_id": vector_id,
                        "layer": self.layers[k],
                        "kind": kind,
                        "value": float(table[i, k]),
                    }


def _targets(vectors: Sequence[Any], layers: Sequence[int] | int) -> list[tuple[Any, int]]:
    if isinstance(layers, int):
        return [(v, layers) for v in vectors]
    if len(layers) != len(vectors):
        raise ConfigError(
            f"{len(vectors)} vectors but {len(layers)} layers: give one layer per vector or one int"
        )
    return list(zip(vectors, layers, strict=True))


def project(result: CaptureResult, vectors: Sequence[Any], layers: Sequence[int] | int) -> Projections:
    """Project captured activations (response_avg and/or prompt_last) onto each (vector, layer)."""
    targets = _targets(vectors, layers)
    n = len(result.errors)
    out: dict[str, torch.Tensor] = {}
    has = {"proj": "response_avg", "cos_sim": "response_avg", "prompt_last_proj": "prompt_last"}
    kinds = [k for k in KINDS if has[k] in result.values]
    for kind in kinds:
        out[kind] = torch.full((n, len(targets)), float("nan"))
    by_layer: dict[int, list[int]] = {}
    for k, (_vector, layer) in enumerate(targets):
        by_layer.setdefault(layer, []).append(k)
    for layer, ks in by_layer.items():
        raw = torch.stack([targets[k][0].row(layer) for k in ks]).double()  # [K_l, H]
        norms = raw.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            bad = [targets[k][0].vector_id for k, nrm in zip(ks, norms[:, 0], strict=True) if nrm == 0]
            raise ConfigError(
                f"vector(s) {bad} have a zero row at layer {layer}: pick a layer they were built at"
            )
        unit = raw / norms
        index = torch.tensor(ks)
        if "proj" in out:
            h = result.get("response_avg", layer).double()  # [N, H]
            proj = h @ unit.T
            out["proj"][:, index] = proj.float()
            out["cos_sim"][:, index] = (proj / h.norm(dim=1, keepdim=True).clamp_min(1e-30)).float()
        if "prompt_last_proj" in out:
            out["prompt_last_proj"][:, index] = (result.get("prompt_last", layer).double() @ unit.T).float()
    return Projections(
        vector_ids=[v.vector_id for v, _ in targets],
        layers=[layer for _, layer in targets],
        values=out,
        errors=list(result.errors),
    )


def compute_projections(
    lm: Any,
    conversations: Sequence[Conversation],
    vectors: Sequence[Any],
    layers: Sequence[int] | int,
    *,
    token_budget: int | None = None,
) -> Projections:
    """One batched forward per text, then every projection kind for every (vector, layer)."""
    targets = _targets(vectors, layers)
    for vector, _layer in targets:
        vector.check_compatible(lm.n_layers, lm.hidden_size)
    wanted = sorted({layer for _, layer in targets})
    result = capture_activations(
        lm, conversations, layers=wanted, poolings=["response_avg", "prompt_last"], token_budget=token_budget
    )
    return project(result, [v for v, _ in targets], [layer for _, layer in targets])

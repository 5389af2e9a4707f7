"""Small helpers shared by the generation tests."""

from __future__ import annotations

import torch


def random_steering_vector(lm, scale: float = 8.0) -> torch.Tensor:
    """Seeded random rows, one per layer (embeddings included), each of norm `scale`."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(lm.n_layers + 1, lm.hidden_size, generator=gen)
    return rows / rows.norm(dim=-1, keepdim=True) * scale

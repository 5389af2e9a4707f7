"""The research code's activation loop, kept as an independent reference for tests and benchmarks.

One sample per forward, `output_hidden_states` for every layer, pooling afterwards; the research code
runs the forward with autograd on (no torch.no_grad), and `grad=True` reproduces that. Note: HF's last
hidden-state row is taken after the final norm, while pvdata's layer L is the output of block L (pre-norm);
`capture_reference` therefore reads layer L with a hook on the last block, so both follow one convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch


def reference_sample(
    model: Any,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    layers: Sequence[int],
    *,
    grad: bool = False,
    blocks: Any = None,
) -> dict[str, dict[int, torch.Tensor]]:
    """Pooled activations of one sample: {pooling: {layer: [H] float32}}."""
    ids = torch.tensor([list(prompt_ids) + list(answer_ids)], device=next(model.parameters()).device)
    n_prompt = len(prompt_ids)
    last_block: dict[str, torch.Tensor] = {}
    handle = None
    if blocks is not None:
        n_layers = len(blocks)

        def keep(_m: Any, _a: Any, out: Any) -> None:
            last_block["h"] = out[0] if isinstance(out, tuple) else out

        handle = blocks[n_layers - 1].register_forward_hook(keep)
    try:
        with nullcontext() if grad else torch.no_grad():
            outputs = model(input_ids=ids, output_hidden_states=True)
    finally:
        if handle is not None:
            handle.remove()
    hidden_states = list(outputs.hidden_states)
    if "h" in last_block:
        hidden_states[-1] = last_block["h"]
    out: dict[str, dict[int, torch.Tensor]] = {"prompt_avg": {}, "response_avg": {}, "prompt_last": {}}
    for layer in layers:
        h = hidden_states[layer][0].detach().float().cpu()
        out["prompt_avg"][layer] = h[:n_prompt].mean(dim=0)
        if len(answer_ids):
            out["response_avg"][layer] = h[n_prompt:].mean(dim=0)
        out["prompt_last"][layer] = h[n_prompt - 1]
    return out


def capture_reference(
    lm: Any,
    samples: Sequence[tuple[Sequence[int], Sequence[int]]],
    layers: Sequence[int],
    *,
    grad: bool = False,
) -> dict[str, torch.Tensor]:
    """{pooling: [N, len(layers), H]} from the per-sample loop (NaN where a pooling is undefined)."""
    results = [
        reference_sample(lm.model, p, a, layers, grad=grad, blocks=lm.layers.blocks) for p, a in samples
    ]
    nan = torch.full_like(results[0]["prompt_last"][layers[0]], float("nan"))
    return {
        pooling: torch.stack(
            [torch.stack([res[pooling].get(layer, nan) for layer in layers]) for res in results]
        )
        for pooling in ("prompt_avg", "response_avg", "prompt_last")
    }

"""The finetuning shift (paper section 4.2, ALGORITHMS.md section 8).

Over a trait's evaluation prompts (no system prompt: the chat template's default applies, as in
`pvdata evaluate`), shift_l = (mean prompt_last activation of the finetuned model - the same for the base
model) . v_hat_l. The prompt_last activation is h_l at the last prompt token (the end of the assistant
generation prompt), read with hooks on the blocks (layer l = output of block l).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ShiftRow:
    layer: int
    shift: float
    base_proj: float
    finetuned_proj: float
    n_prompts: int


def encode_questions(tokenizer: Any, questions: Sequence[str]) -> list[list[int]]:
    """Chat-templated prompts (generation prompt added, no specials added again), one per question."""
    from pvdata.chat import encode_prompt

    return [encode_prompt(tokenizer, [{"role": "user", "content": q}]) for q in questions]


def prompt_last_means(
    lm: Any, prompts: Sequence[Sequence[int]], layers: Sequence[int], *, token_budget: int | None = None
) -> dict[int, torch.Tensor]:
    """layer -> mean over prompts of h_l at the last prompt token ([H], float64)."""
    from pvdata.activations.capture import capture_encoded

    result = capture_encoded(
        lm,
        [(list(p), []) for p in prompts],
        layers=layers,
        poolings=["prompt_last"],
        token_budget=token_budget,
    )
    bad = [e for e in result.errors if e is not None]
    if bad:
        from pvdata.training.errors import TrainingError

        raise TrainingError(f"{len(bad)} shift prompt(s) could not be captured: {bad[0]}")
    return {layer: result.get("prompt_last", layer).double().mean(dim=0) for layer in result.layers}


def shift_rows(
    finetuned: dict[int, torch.Tensor], base: dict[int, torch.Tensor], vector: Any, n_prompts: int
) -> list[ShiftRow]:
    """Project both means on v_hat at each layer; shift = finetuned_proj - base_proj."""
    rows = []
    for layer in sorted(finetuned):
        unit = vector.unit(layer).double()
        ft = float(finetuned[layer] @ unit)
        bs = float(base[layer] @ unit)
        rows.append(ShiftRow(layer, ft - bs, bs, ft, n_prompts))
    return rows


def finetuning_shift(
    finetuned_lm: Any,
    base_lm: Any,
    vector: Any,
    questions: Sequence[str],
    layers: Sequence[int],
    *,
    token_budget: int | None = None,
) -> list[ShiftRow]:
    """The shift between two loaded models (they must share the tokenizer and shape)."""
    prompts = encode_questions(finetuned_lm.tokenizer, questions)
    ft = prompt_last_means(finetuned_lm, prompts, layers, token_budget=token_budget)
    base = prompt_last_means(base_lm, prompts, layers, token_budget=token_budget)
    return shift_rows(ft, base, vector, len(prompts))


def peft_finetuning_shift(
    lm: Any, vector: Any, questions: Sequence[str], layers: Sequence[int], *, token_budget: int | None = None
) -> list[ShiftRow]:
    """The shift of a PEFT-wrapped model against its own base (the adapter switched off), no reload."""
    prompts = encode_questions(lm.tokenizer, questions)
    ft = prompt_last_means(lm, prompts, layers, token_budget=token_budget)
    with lm.model.disable_adapter():
        base = prompt_last_means(lm, prompts, layers, token_budget=token_budget)
    return shift_rows(ft, base, vector, len(prompts))

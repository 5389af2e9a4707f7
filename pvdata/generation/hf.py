"""Batched HF generation: left padding, length-sorted batches, seeded sampling, stop at end of turn.

Steering is applied by the caller's `pvdata.steering.steer` context around this call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pvdata.activations.batching import token_budget_batches
from pvdata.chat import Message, encode_prompt


@dataclass(frozen=True)
class Generation:
    prompt_index: int
    sample_index: int
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length"


def _stop_ids(lm: Any) -> list[int]:
    ids: set[int] = set()
    eos = lm.model.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = lm.tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != lm.tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(ids)


def generate(
    lm: Any,
    prompts: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    n: int = 1,
    seed: int = 0,
    token_budget: int = 8192,
) -> list[Generation]:
    """Answers to chat prompts, `n` per prompt, in (prompt, sample) order. temperature 0 = greedy."""
    tok = lm.tokenizer
    encoded = [encode_prompt(tok, messages) for messages in prompts]
    jobs = [(i, s) for i in range(len(encoded)) for s in range(n)]
    widths = [len(encoded[i]) + max_new_tokens for i, _ in jobs]
    stops = _stop_ids(lm)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    device = next(lm.model.parameters()).device
    results: dict[tuple[int, int], Generation] = {}
    for batch_no, batch in enumerate(token_budget_batches(widths, token_budget)):
        rows = [encoded[jobs[j][0]] for j in batch]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        torch.manual_seed(seed * 1_000_003 + batch_no)
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                min_new_tokens=1,
                eos_token_id=stops,
                pad_token_id=pad_id,
                **sampling,
            )
        new = out[:, width:].cpu()
        for r, j in enumerate(batch):
            tokens = new[r].tolist()
            cut = next((k for k, t in enumerate(tokens) if t in stops), None)
            body = tokens if cut is None else tokens[:cut]
            results[jobs[j]] = Generation(
                prompt_index=jobs[j][0],
                sample_index=jobs[j][1],
                text=tok.decode(body, skip_special_tokens=True),
                n_tokens=len(body) + (0 if cut is None else 1),
                finish_reason="length" if cut is None else "stop",
            )
    return [results[job] for job in jobs]

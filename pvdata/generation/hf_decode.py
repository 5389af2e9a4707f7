"""pvdata's own decode loop after the split prefill: finished rows leave the batch as they end.

HF generate keeps every row of a batch until the longest one ends: a row that stopped after 20 tokens
still runs through every layer (as padding) for the other rows' remaining steps. This loop makes the
same one-token forward calls on the live rows only. Per step: run the model on each live row's last
token with the KV cache, pick the next token (argmax, or the row's own generator via `_RowSampler`), and
when a row hits a stop token (or its budget) select the survivors along the batch dim of the cache, the
attention mask, the positions and the sampler. The cache already copies itself every step
(DynamicLayer.update concatenates), so the index-select on the steps where rows end costs about one
more such copy.

Same answers as HF generate: positions are the count of real tokens (left padding, as HF computes them
from the mask), the forward calls are one-token calls with the 2-D mask HF passes (so steering hooks,
which decide positions per call from that mask and keep no per-row state, steer the same positions),
and each row's generator draws once per step of that row, in the same order. Float32 logits of a
smaller batch can differ in the last bit on some kernels; on CPU float32 they are exact in practice
(the tests compare against one HF generate call per prompt).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from pvdata.errors import ConfigError

__all__ = ["DECODE_MODES", "DecodeStats", "decode_dropping", "plain_generation_config", "resolve_decode"]

DECODE_MODES = ("drop", "hf")
DEFAULT_DECODE = "drop"

# generation_config fields that add a logits processor HF generate would apply and this loop does not
_PROCESSOR_FIELDS = (
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "bad_words_ids",
    "sequence_bias",
    "exponential_decay_length_penalty",
    "encoder_repetition_penalty",
)


def resolve_decode(value: str | None = None) -> str:
    """The decode loop to use: `value`, else PVDATA_GEN_DECODE, else "drop"; ConfigError if unknown."""
    source = "decode"
    if value is None:
        value = os.environ.get("PVDATA_GEN_DECODE") or DEFAULT_DECODE
        source = "PVDATA_GEN_DECODE"
    if value not in DECODE_MODES:
        raise ConfigError(
            f"{source}={value!r} is not a decode loop: valid values are drop (finished rows leave the "
            "batch, the default) and hf (HF generate runs every row until the longest ends)"
        )
    return value


def plain_generation_config(model: Any) -> bool:
    """True when the model's generation_config asks for no logits processor beyond pvdata's own.

    pvdata turns sampling, penalties and top-k off for HF generate; a config that still forces or
    suppresses tokens would make HF generate and this loop differ, so such models use HF generate.
    """
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    if any(getattr(config, name, None) not in (None, [], {}) for name in _PROCESSOR_FIELDS):
        return False
    return not getattr(config, "min_length", 0)


class RowPicker(Protocol):
    """What the loop needs from a per-row sampler: scores -> forced scores, and dropping rows."""

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor: ...

    def keep_rows(self, indices: Sequence[int]) -> None: ...


@dataclass
class DecodeStats:
    """Work done by the one-token decode calls: forward calls, and rows summed over those calls."""

    steps: int = 0
    row_steps: int = 0

    def add(self, steps: int, row_steps: int) -> None:
        self.steps += steps
        self.row_steps += row_steps


def decode_dropping(
    model: Any,
    cache: Any,
    first: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    stops: Sequence[int],
    sampler: RowPicker | None,
    *,
    cache_kw: str,
    has_keep: bool,
    stats: DecodeStats | None = None,
) -> list[list[int]]:
    """New tokens per row (the first one included, a stop token ends a row) after a prefill.

    `first` [B, 1] holds the tokens picked from the prefill logits (never a stop token), `prompt_mask`
    [B, W] the left-padded prompt mask the cache was built with. The cache is consumed (rows selected in
    place).
    """
    device = first.device
    rows = first.shape[0]
    tokens: list[list[int]] = [[int(t)] for t in first[:, 0].tolist()]
    if max_new_tokens <= 1 or rows == 0:
        return tokens
    stop_ids = torch.tensor(sorted(set(stops)), dtype=torch.long, device=device)
    live = list(range(rows))
    mask = prompt_mask.to(device)
    # the position of each row's last real token; pads before it are not counted (HF: mask cumsum - 1)
    pos = mask.sum(dim=-1, keepdim=True) - 1
    last = first
    extra: dict[str, Any] = {"logits_to_keep": 1} if has_keep else {}
    for _ in range(max_new_tokens - 1):
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = pos + 1
        out = model(
            input_ids=last,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            **{cache_kw: cache},
            **extra,
        )
        logits = out.logits[:, -1, :].float()
        del out
        if stats is not None:
            stats.add(1, len(live))
        picked = (sampler(None, logits) if sampler is not None else logits).argmax(dim=-1)
        for r, t in zip(live, picked.tolist(), strict=True):
            tokens[r].append(int(t))
        ended = torch.isin(picked, stop_ids)
        if not bool(ended.any()):
            last = picked.unsqueeze(-1)
            continue
        keep = (~ended).nonzero().flatten()
        if keep.numel() == 0:
            break
        kept = keep.tolist()
        live = [live[k] for k in kept]
        _select_rows(cache, keep)
        mask, pos, last = mask[keep], pos[keep], picked[keep].unsqueeze(-1)
        if sampler is not None:
            sampler.keep_rows(kept)
    return tokens


def _select_rows(cache: Any, keep: torch.Tensor) -> None:
    """Keep only `keep` along the batch dim of every cache layer."""
    select = getattr(cache, "batch_select_indices", None)
    if select is not None:
        select(keep)
        return
    for layer in cache.layers:  # older caches: the layers' tensors directly
        layer.keys = layer.keys.index_select(0, keep.to(layer.keys.device))
        layer.values = layer.values.index_select(0, keep.to(layer.values.device))

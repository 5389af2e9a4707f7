"""Batched activation capture: teacher-force prompt + answer, pool per layer, stop after the last layer.

Only the requested blocks are hooked; the deepest hook raises to stop the forward (no later blocks, no
lm_head). Batches are right-padded (real tokens never attend to pads, positions stay 0..n-1), sorted by
length and sized by a token budget. Pooling is mask-aware and accumulates in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pvdata.activations.batching import token_budget_batches
from pvdata.activations.prefetch import PassTimings, prefetch
from pvdata.chat import Conversation, encode_conversation
from pvdata.errors import ConfigError
from pvdata.models.layers import LayerInfo, find_layers, hidden_size

POOLINGS: tuple[str, ...] = ("prompt_avg", "response_avg", "prompt_last")
DEFAULT_TOKEN_BUDGET = {"cpu": 4096, "cuda": 65536}

ProgressFn = Callable[[int, int], None]


@dataclass
class CaptureResult:
    """Per-sample pooled activations in input order.

    values[pooling] has shape [N, len(layers), H] (float32, CPU). A sample that could not be captured
    has its reason in errors[i] and NaN rows, so use `ok` (or `select`) before averaging.
    """

    layers: tuple[int, ...]
    poolings: tuple[str, ...]
    values: dict[str, torch.Tensor]
    errors: list[str | None]
    n_prompt_tokens: list[int]
    n_answer_tokens: list[int]
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> torch.Tensor:
        return torch.tensor([e is None for e in self.errors], dtype=torch.bool)

    def get(self, pooling: str, layer: int) -> torch.Tensor:
        """[N, H] for one pooling and layer."""
        if pooling not in self.values:
            raise ConfigError(f"pooling {pooling!r} was not captured; captured: {', '.join(self.values)}")
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} was not captured; captured layers: {list(self.layers)}")
        return self.values[pooling][:, self.layers.index(layer)]

    def select(self, pooling: str) -> torch.Tensor:
        """[n_ok, len(layers), H]: only samples captured without error."""
        return self.values[pooling][self.ok]


@dataclass
class _BatchState:
    sum_masks: torch.Tensor | None = None  # [B, k, T] float32: rows prompt, response
    counts: torch.Tensor | None = None  # [B, k]
    last_prompt: torch.Tensor | None = None  # [B] index of the last prompt token
    out: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, P, H]


class _StopForward(Exception):
    """Raised by the deepest hook: everything after the last requested layer is wasted work."""


def _hidden_of(output: Any) -> torch.Tensor:
    """Block outputs are a Tensor in transformers 5.x and a tuple (hidden, ...) in 4.x and vLLM."""
    return output[0] if isinstance(output, tuple) else output


def _check_poolings(poolings: Sequence[str]) -> tuple[str, ...]:
    bad = [p for p in poolings if p not in POOLINGS]
    if bad or not poolings:
        raise ConfigError(f"unknown pooling {bad or poolings!r}: valid poolings are {', '.join(POOLINGS)}")
    return tuple(dict.fromkeys(poolings))


def _check_layers(layer_info: LayerInfo, layers: Sequence[int]) -> tuple[int, ...]:
    if not layers:
        raise ConfigError(f"no layers requested; valid layers are 0..{layer_info.n_layers}")
    return tuple(sorted({layer_info.check_layer(int(layer)) for layer in layers}))


def _pool(hidden: torch.Tensor, state: _BatchState, poolings: tuple[str, ...]) -> torch.Tensor:
    """[B, P, H] float32 pooled values of one layer's hidden states [B, T, H]."""
    h32 = hidden.float()
    parts: list[torch.Tensor] = []
    sums = None
    if state.sum_masks is not None:
        sums = torch.bmm(state.sum_masks, h32) / state.counts.unsqueeze(-1)  # type: ignore[union-attr]
    for pooling in poolings:
        if pooling == "prompt_avg":
            parts.append(sums[:, 0])  # type: ignore[index]
        elif pooling == "response_avg":
            parts.append(sums[:, 1])  # type: ignore[index]
        else:
            rows = torch.arange(h32.shape[0], device=h32.device)
            parts.append(h32[rows, state.last_prompt])
    return torch.stack(parts, dim=1)


def _validate(
    samples: Sequence[tuple[Sequence[int], Sequence[int]]], poolings: tuple[str, ...], max_length: int
) -> list[str | None]:
    errors: list[str | None] = []
    for prompt_ids, answer_ids in samples:
        total = len(prompt_ids) + len(answer_ids)
        if not prompt_ids:
            errors.append("empty prompt: prompt_avg and prompt_last need at least one prompt token")
        elif not answer_ids and "response_avg" in poolings:
            errors.append("empty answer: response_avg needs at least one answer token")
        elif total > max_length:
            errors.append(f"too long: {total} tokens, the limit is {max_length} (raise it with --max-length)")
        else:
            errors.append(None)
    return errors


def default_max_length(model: Any) -> int:
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 4096


def capture_encoded(
    lm: Any,
    samples: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    layers: Sequence[int],
    poolings: Sequence[str] = POOLINGS,
    token_budget: int | None = None,
    max_length: int | None = None,
    progress: ProgressFn | None = None,
    prefetch_batches: bool = True,
    timings: PassTimings | None = None,
) -> CaptureResult:
    """Capture pooled activations of already-tokenised (prompt ids, answer ids) samples.

    `lm` is a LoadedModel (or any object with .model and .layers); the model is not modified. The next
    batches are padded (into pinned memory on CUDA) in a background thread while the device runs the
    current one (`prefetch_batches=False`: inline, same results); pooled values stay on the device and
    come back to the host once, at the end. `timings` records host and device seconds.
    """
    model = lm.model
    layer_info: LayerInfo = getattr(lm, "layers", None) or find_layers(model)
    pools = _check_poolings(poolings)
    wanted = _check_layers(layer_info, layers)
    device = next(model.parameters()).device
    budget = token_budget or DEFAULT_TOKEN_BUDGET["cuda" if device.type == "cuda" else "cpu"]
    limit = max_length or default_max_length(model)
    pad_id = getattr(getattr(lm, "tokenizer", None), "pad_token_id", None) or 0

    n = len(samples)
    errors = _validate(samples, pools, limit)
    hidden = hidden_size(model)
    values = {p: torch.full((n, len(wanted), hidden), float("nan")) for p in pools}
    good = [i for i in range(n) if errors[i] is None]
    lengths = [len(samples[i][0]) + len(samples[i][1]) for i in good]
    batches = [[good[j] for j in batch] for batch in token_budget_batches(lengths, budget)]

    state = _BatchState()
    deepest = wanted[-1]
    need_sums = "prompt_avg" in pools or "response_avg" in pools

    def make_hook(layer: int) -> Callable[..., None]:
        def record(hidden_states: torch.Tensor) -> None:
            state.out[layer] = _pool(hidden_states, state, pools)
            if layer == deepest:
                raise _StopForward

        return record

    handles = []
    try:
        for layer in wanted:
            record = make_hook(layer)
            if layer == 0:
                handles.append(
                    layer_info.blocks[0].register_forward_pre_hook(
                        lambda _m, args, kwargs, r=record: r(args[0] if args else kwargs["hidden_states"]),
                        with_kwargs=True,
                    )
                )
            else:
                handles.append(
                    layer_info.blocks[layer - 1].register_forward_hook(
                        lambda _m, _args, output, r=record: r(_hidden_of(output))
                    )
                )
        done = 0
        tokens = 0
        pin = device.type == "cuda"
        staged: list[tuple[list[int], torch.Tensor]] = []  # (batch, [B, len(wanted), P, H] on device)
        staged_bytes = 0
        prepared = (_make_batch(samples, batch, pad_id, need_sums, pin) for batch in batches)
        with torch.inference_mode(), prefetch(prepared, enabled=prefetch_batches, timings=timings) as ready:
            for batch, host in zip(batches, ready, strict=True):
                input_ids, attention, masks, counts, last = _to_device(host, device)
                state.sum_masks, state.counts, state.last_prompt = masks, counts, last
                state.out.clear()
                timer = timings.device(device) if timings is not None else contextlib.nullcontext()
                with timer, contextlib.suppress(_StopForward):
                    model(input_ids=input_ids, attention_mask=attention, use_cache=False)
                staged.append((batch, torch.stack([state.out[layer] for layer in wanted], dim=1)))
                staged_bytes += staged[-1][1].nbytes
                if staged_bytes > _STAGE_BYTES:
                    _unstage(staged, values, pools)
                    staged_bytes = 0
                done += len(batch)
                tokens += int(host[1].sum())  # the host copy of the mask: no device sync
                if progress:
                    progress(done, len(good))
        _unstage(staged, values, pools)
    finally:
        for handle in handles:
            handle.remove()
    return CaptureResult(
        layers=wanted,
        poolings=pools,
        values=values,
        errors=errors,
        n_prompt_tokens=[len(p) for p, _ in samples],
        n_answer_tokens=[len(a) for _, a in samples],
        stats={"batches": float(len(batches)), "tokens": float(tokens)},
    )


_STAGE_BYTES = 1 << 30  # pooled values kept on the device before one copy back (a call's worth, usually)

HostBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]


def _unstage(
    staged: list[tuple[list[int], torch.Tensor]], values: dict[str, torch.Tensor], pools: tuple[str, ...]
) -> None:
    """Pooled values of the staged batches into `values` with one device-to-host copy (one sync)."""
    if not staged:
        return
    index = torch.tensor([i for batch, _ in staged for i in batch])
    pooled = torch.cat([t for _, t in staged]).cpu()
    for k, pooling in enumerate(pools):
        values[pooling][index] = pooled[:, :, k]
    staged.clear()


def _to_device(host: HostBatch, device: torch.device) -> HostBatch:
    ids, attention, masks, counts, last = host
    return (
        ids.to(device, non_blocking=True),
        attention.to(device, non_blocking=True),
        masks.to(device, non_blocking=True) if masks is not None else None,
        counts.to(device, non_blocking=True) if counts is not None else None,
        last.to(device, non_blocking=True),
    )


def _make_batch(
    samples: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch: list[int],
    pad_id: int,
    need_sums: bool,
    pin: bool = False,
) -> HostBatch:
    """Right-padded ids, the attention mask, the pooling masks, their counts and the last prompt
    index of one batch, on the host (pinned when `pin`, so the copy to the device can be async)."""
    width = max(len(samples[i][0]) + len(samples[i][1]) for i in batch)
    b = len(batch)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention = torch.zeros((b, width), dtype=torch.long)
    masks = torch.zeros((b, 2, width), dtype=torch.float32) if need_sums else None
    last = torch.zeros(b, dtype=torch.long)
    for row, i in enumerate(batch):
        prompt_ids, answer_ids = samples[i]
        n_p, n_a = len(prompt_ids), len(answer_ids)
        ids[row, :n_p] = torch.as_tensor(prompt_ids, dtype=torch.long)
        if n_a:
            ids[row, n_p : n_p + n_a] = torch.as_tensor(answer_ids, dtype=torch.long)
        attention[row, : n_p + n_a] = 1
        last[row] = n_p - 1
        if masks is not None:
            masks[row, 0, :n_p] = 1.0
            masks[row, 1, n_p : n_p + n_a] = 1.0
    counts = masks.sum(dim=2).clamp_min(1.0) if masks is not None else None
    if not pin:
        return ids, attention, masks, counts, last
    return (
        ids.pin_memory(),
        attention.pin_memory(),
        masks.pin_memory() if masks is not None else None,
        counts.pin_memory() if counts is not None else None,
        last.pin_memory(),
    )


def capture_activations(
    lm: Any,
    conversations: Sequence[Conversation],
    *,
    layers: Sequence[int],
    poolings: Sequence[str] = POOLINGS,
    token_budget: int | None = None,
    max_length: int | None = None,
    progress: ProgressFn | None = None,
) -> CaptureResult:
    """Capture activations of chat conversations (prompt messages + answer), in input order."""
    samples = [encode_conversation(lm.tokenizer, conv) for conv in conversations]
    return capture_encoded(
        lm,
        samples,
        layers=layers,
        poolings=poolings,
        token_budget=token_budget,
        max_length=max_length,
        progress=progress,
    )

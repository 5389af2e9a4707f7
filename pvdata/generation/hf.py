"""Batched generation with transformers: the reference backend, and the one that steers and loads LoRA.

How a call is planned: every (prompt, sample) is a row; rows are sorted by length (longest first) and
grouped into decode batches of at most `token_budget` padded tokens (prompt + max_new_tokens), which
bounds the KV cache. A decode batch is prefilled in small length-sorted groups (`prefill_budget`): one
forward over whole prompts per group, so padding stays small and, on a CPU, activations stay
cache-sized. The groups' caches are merged, the first token is picked from the prefill logits (never an
end-of-turn token: at least one token), and the decode loop continues from the merged cache: by
default pvdata's own (`decode="drop"`, hf_decode.py), which drops each row from the batch as it ends,
or HF generate (`decode="hf"`), which runs the whole batch until every row has ended its turn or
reached the limit. Both make the forward calls HF generate makes (a prefill call over whole prompts,
then one-token calls), so steering positions mean the same and the answers are the same.

Sampling does not use the global torch RNG. HF generate runs in greedy mode and a logits processor (the
drop loop calls the same one) draws each row's token from that row's own torch.Generator, seeded from
(seed, prompt tokens, sample_index). A sample therefore does not depend on which other rows share its
batch, so a resumed run (fewer rows), a different token budget or another prompt order gives the same
samples, up to floating-point differences in the logits of differently shaped batches (exact in practice
in float32 on CPU; bfloat16 on GPU can flip a near-tie). Strict guarantee: same seed + same inputs +
same batch plan + same device and dtype -> the same outputs. Greedy answers are argmax and need no RNG;
with n > 1 greedy samples are generated once and copied."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch

from pvdata.activations.batching import token_budget_batches
from pvdata.chat import Message, encode_prompt, render_prompt
from pvdata.errors import ConfigError
from pvdata.generation.base import GenerationRequest, GenerationResult, SamplingParams, sample_seed
from pvdata.generation.hf_decode import DecodeStats, decode_dropping, plain_generation_config, resolve_decode

__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "Generation",
    "HFBackend",
    "default_prefill_budget",
    "default_token_budget",
    "generate",
    "generate_encoded",
    "plan_batches",
    "plan_prefill",
    "stop_token_ids",
]

# Padded (prompt + new) tokens per generate call. On a GPU the KV cache of 64k tokens of a 7-8B model
# is 4-9 GB; on a CPU larger batches mostly amortise per-step overhead, so the same budget serves both.
DEFAULT_TOKEN_BUDGET = 65536
MAX_BATCH = 256
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|endoftext|>")


def default_token_budget() -> int:
    """PVDATA_GEN_TOKEN_BUDGET, else DEFAULT_TOKEN_BUDGET."""
    value = os.environ.get("PVDATA_GEN_TOKEN_BUDGET")
    if not value:
        return DEFAULT_TOKEN_BUDGET
    try:
        budget = int(value)
    except ValueError:
        raise ConfigError(f"PVDATA_GEN_TOKEN_BUDGET={value!r} is not an integer") from None
    if budget < 1:
        raise ConfigError(f"PVDATA_GEN_TOKEN_BUDGET={value!r} must be >= 1")
    return budget


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """End-of-turn ids: the model's and tokenizer's EOS plus the chat end tokens the vocabulary has."""
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        tid = vocab.get(token)
        if isinstance(tid, int) and tid >= 0:
            ids.add(tid)
    if not ids:
        raise ConfigError(
            f"the tokenizer {type(tokenizer).__name__} has no EOS or end-of-turn token: generation would "
            "never stop before max_new_tokens; use a chat model"
        )
    return sorted(ids)


@dataclass(frozen=True)
class RawSample:
    """Token ids of one answer before decoding (body excludes the stop token)."""

    prompt_index: int
    sample_index: int
    body: list[int]
    stopped: bool

    @property
    def n_tokens(self) -> int:
        """Generated tokens, counting the end-of-turn token when the answer stopped on one."""
        return len(self.body) + (1 if self.stopped else 0)


class _RowSampler:
    """A logits processor that samples each row with its own generator and forces that token.

    Returns scores that are -inf except at the drawn token, so HF's greedy step picks it. Inverse-CDF
    sampling in float64 with one uniform draw per row and step: reproducible per row. `keep_rows`
    drops finished rows (the drop decode loop), each survivor keeping its own generator.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device) -> None:
        self.temperature, self.top_p, self.device = temperature, top_p, device
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def keep_rows(self, indices: Sequence[int]) -> None:
        """Keep the generators of rows `indices` (positions in the current batch), in that order."""
        self.generators = [self.generators[i] for i in indices]

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        order: torch.Tensor | None = None
        if self.top_p < 1.0:
            probs, order = probs.sort(dim=-1, descending=True)
            before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
            probs = probs.masked_fill(before >= self.top_p, 0.0)
        cdf = probs.double().cumsum(dim=-1)
        u = torch.cat(
            [torch.rand(1, generator=g, device=self.device, dtype=torch.float64) for g in self.generators]
        )
        target = (u * cdf[:, -1]).unsqueeze(-1)
        picked = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[-1] - 1)
        if order is not None:
            picked = order.gather(-1, picked)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, picked, 0.0)


def plan_batches(lengths: Sequence[int], max_new_tokens: int, token_budget: int) -> list[list[int]]:
    """Row indices per decode batch: longest first, rows x (width + max_new_tokens) <= budget."""
    return token_budget_batches([n + max_new_tokens for n in lengths], token_budget, max_batch=MAX_BATCH)


def plan_prefill(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Split rows already sorted longest first into consecutive groups of <= budget padded tokens."""
    groups: list[list[int]] = []
    current: list[int] = []
    width = 0
    for k, n in enumerate(lengths):
        w = max(width, n)
        if current and w * (len(current) + 1) > budget:
            groups.append(current)
            current, w = [], n
        current.append(k)
        width = w
    if current:
        groups.append(current)
    return groups


def default_prefill_budget(device: torch.device) -> int:
    """Padded tokens per prefill forward: CPUs slow down on activations that leave the cache."""
    return 4096 if device.type == "cpu" else 32768


def _left_pad(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[r, width - len(row) :] = 1
    return ids, mask


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


def _forward_names(model: Any) -> tuple[str, bool]:
    """(the cache keyword of forward, whether it takes logits_to_keep), across transformers versions."""
    import inspect

    from pvdata.models.layers import unwrap_peft

    params = inspect.signature(unwrap_peft(model).forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _prefill(
    model: Any, rows: Sequence[Sequence[int]], width: int, pad_id: int, budget: int, device: torch.device
) -> tuple[torch.Tensor, Any]:
    """Last-position logits [B, V] and one KV cache left-padded to `width`, prefilling in small groups.

    Each group is one forward call over whole prompts, so steering sees the same calls as in HF
    generate (a prefill call with every prompt position, then one-token calls).
    """
    cache_kw, has_keep = _forward_names(model)
    logits: list[torch.Tensor] = []
    keys: list[list[torch.Tensor]] = []
    values: list[list[torch.Tensor]] = []
    for group in plan_prefill([len(r) for r in rows], budget):
        w = max(len(rows[k]) for k in group)
        ids, mask = _left_pad([rows[k] for k in group], w, pad_id)
        cache = _new_cache(model)
        extra: dict[str, Any] = {"logits_to_keep": 1} if has_keep else {}
        # positions count real tokens only, as HF generate computes them for left-padded rows
        extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            use_cache=True,
            **{cache_kw: cache},
            **extra,
        )
        logits.append(out.logits[:, -1, :].float())
        for layer_idx, layer in enumerate(cache.layers):
            if layer_idx == len(keys):
                keys.append([])
                values.append([])
            pad = (0, 0, width - w, 0)  # zeros on the left of the sequence axis: masked positions
            keys[layer_idx].append(torch.nn.functional.pad(layer.keys, pad))
            values[layer_idx].append(torch.nn.functional.pad(layer.values, pad))
        del cache, out
    merged = _new_cache(model)
    for layer_idx in range(len(keys)):
        k = torch.cat(keys[layer_idx])
        v = torch.cat(values[layer_idx])
        keys[layer_idx] = values[layer_idx] = []
        merged.update(k, v, layer_idx)
    return torch.cat(logits), merged


def _can_split_prefill(model: Any) -> bool:
    """True when the model's cache is plain per-layer key/value tensors that can be merged by padding.

    Sliding-window, hybrid or older caches fall back to one HF generate call per decode batch.
    """
    try:
        cache = _new_cache(model)
    except Exception:
        return False
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    return all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _hf_generate(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    max_new_tokens: int,
    min_new_tokens: int,
    stops: list[int],
    pad_id: int,
    sampler: _RowSampler | None,
    cache: Any = None,
) -> torch.Tensor:
    """HF generate in greedy mode with only our processors (the model's sampling defaults are off)."""
    from transformers import LogitsProcessorList

    extra: dict[str, Any] = {}
    if cache is not None:
        extra[_forward_names(model)[0]] = cache
    if min_new_tokens:
        extra["min_new_tokens"] = min_new_tokens
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        eos_token_id=stops,
        pad_token_id=pad_id,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        min_p=None,
        typical_p=None,
        repetition_penalty=None,
        no_repeat_ngram_size=None,
        disable_compile=True,
        logits_processor=LogitsProcessorList([sampler] if sampler is not None else []),
        **extra,
    )


def _generate_split(
    model: Any,
    rows: Sequence[Sequence[int]],
    width: int,
    pad_id: int,
    budget: int,
    device: torch.device,
    stops: list[int],
    sampler: _RowSampler | None,
    params: SamplingParams,
    decode: str,
    stats: DecodeStats | None,
) -> list[list[int]]:
    """New token ids per row: split prefill, first token here, then the decode loop from the cache."""
    logits, cache = _prefill(model, rows, width, pad_id, budget, device)
    logits[:, stops] = float("-inf")  # the first token is never the end of the turn
    first = (sampler(None, logits) if sampler is not None else logits).argmax(dim=-1, keepdim=True)
    if params.max_new_tokens == 1:
        return [[int(t)] for t in first[:, 0].tolist()]
    ids, mask = _left_pad(rows, width, pad_id)
    if decode == "drop":
        cache_kw, has_keep = _forward_names(model)
        return decode_dropping(
            model,
            cache,
            first.to(device),
            mask,
            params.max_new_tokens,
            stops,
            sampler,
            cache_kw=cache_kw,
            has_keep=has_keep,
            stats=stats,
        )
    ids = torch.cat([ids.to(device), first.to(device)], dim=1)
    mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1).to(device)
    out = _hf_generate(model, ids, mask, params.max_new_tokens - 1, 0, stops, pad_id, sampler, cache)
    if stats is not None:  # one one-token call per token after the first, every row in each
        steps = out.shape[1] - width - 1
        stats.add(steps, steps * len(rows))
    return [list(map(int, row)) for row in out[:, width:].tolist()]


def generate_encoded(
    lm: Any,
    encoded: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    token_budget: int | None = None,
    prefill_budget: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    decode: str | None = None,
    stats: DecodeStats | None = None,
) -> list[RawSample]:
    """Answers to already tokenised prompts, n per prompt, in (prompt, sample) order.

    Per decode batch: prefill in small length-sorted groups (little padding, cache-sized activations),
    merge their KV caches, pick the first token here (never an end-of-turn token: at least one token),
    then decode from the merged cache: `decode="drop"` (default; PVDATA_GEN_DECODE) drops rows as they
    end, "hf" lets HF generate run the whole batch. Models whose cache cannot be merged, or whose
    generation_config adds logits processors, use one HF generate call per batch. `stats` (if given)
    adds up the one-token decode calls and the rows they computed.
    """
    tok, model = lm.tokenizer, lm.model
    budget = token_budget or default_token_budget()
    stops = stop_token_ids(tok, getattr(model, "generation_config", None))
    stop_set = set(stops)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    pbudget = prefill_budget or default_prefill_budget(device)
    split = _can_split_prefill(model)
    mode = resolve_decode(decode)
    if mode == "drop" and not plain_generation_config(model):
        mode = "hf"
    # greedy samples are all the same answer: generate it once per prompt
    row_samples = 1 if params.greedy else params.n
    jobs = [(i, s) for i in range(len(encoded)) for s in range(row_samples)]
    batches = plan_batches([len(encoded[i]) for i, _ in jobs], params.max_new_tokens, budget)
    done: dict[tuple[int, int], RawSample] = {}
    for batch in batches:
        rows = [encoded[jobs[j][0]] for j in batch]
        width = max(len(r) for r in rows)
        sampler: _RowSampler | None = None
        if not params.greedy:
            seeds = [sample_seed(params.seed, list(encoded[jobs[j][0]]), jobs[j][1]) for j in batch]
            sampler = _RowSampler(seeds, params.temp, params.top_p, device)
        with torch.inference_mode():
            if split:
                new = _generate_split(
                    model, rows, width, pad_id, pbudget, device, stops, sampler, params, mode, stats
                )
            else:
                ids, mask = _left_pad(rows, width, pad_id)
                out = _hf_generate(
                    model, ids.to(device), mask.to(device), params.max_new_tokens, 1, stops, pad_id, sampler
                )
                new = out[:, width:].tolist()
                if stats is not None:
                    steps = max(0, out.shape[1] - width - 1)
                    stats.add(steps, steps * len(rows))
        for r, j in enumerate(batch):
            tokens = new[r]
            cut = next((k for k, t in enumerate(tokens) if t in stop_set), None)
            prompt_index, sample_index = jobs[j]
            done[jobs[j]] = RawSample(
                prompt_index, sample_index, tokens if cut is None else tokens[:cut], cut is not None
            )
        if on_batch is not None:
            on_batch(len(batch), len(batches))
    results: list[RawSample] = []
    for i in range(len(encoded)):
        for s in range(params.n):
            raw = done[(i, s if row_samples > 1 else 0)]
            results.append(replace(raw, sample_index=s))
    return results


class HFBackend:
    """transformers generation on a loaded model (LoRA adapters included), optionally steered.

    Steering wraps every generate call in `pvdata.steering.apply_spec`, so positions mean what they
    mean there ("prompt" = prefill calls, "response" = last position of each call, pads never steered).
    `decode`: "drop" (finished rows leave the batch) or "hf" (HF generate); None reads
    PVDATA_GEN_DECODE at each call, default "drop".
    """

    name = "hf"

    def __init__(
        self,
        lm: Any,
        *,
        steering: Any = None,
        vector: Any = None,
        token_budget: int | None = None,
        prefill_budget: int | None = None,
        decode: str | None = None,
    ) -> None:
        self.lm = lm
        self.decode = None if decode is None else resolve_decode(decode)
        self.prefill_budget = prefill_budget
        self.model_id: str = lm.model_id
        self.adapter: str | None = getattr(lm, "adapter", None)
        self.token_budget = token_budget
        self.vector = vector
        self.steering = steering
        if steering is not None:
            if vector is None:
                raise ConfigError("a steering spec needs the vector to steer with (--vector FILE)")
            from pvdata.steering import apply_spec

            if hasattr(vector, "check_compatible") and hasattr(lm, "hidden_size"):
                # the same check as screen, train, evaluate: another model's vector is one warning line
                vector.check_compatible(lm.n_layers, lm.hidden_size, lm.model_id)
            with apply_spec(lm, vector, steering) as handle:  # validates layers and shape up front
                self.steering = handle.spec  # carries the vector's id

    def render_prompt(self, request: GenerationRequest) -> str:
        return render_prompt(self.lm.tokenizer, request.messages)

    def encode(self, request: GenerationRequest) -> list[int]:
        return encode_prompt(self.lm.tokenizer, request.messages)

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GenerationResult]:
        encoded = [self.encode(r) for r in requests]
        if self.steering is not None:
            from pvdata.steering import apply_spec

            ctx: Any = apply_spec(self.lm, self.vector, self.steering)
        else:
            ctx = nullcontext()
        with ctx:
            raws = generate_encoded(
                self.lm,
                encoded,
                params,
                token_budget=self.token_budget,
                prefill_budget=self.prefill_budget,
                decode=self.decode,
            )
        tok = self.lm.tokenizer
        return [
            GenerationResult(
                request_index=raw.prompt_index,
                sample_index=raw.sample_index,
                text=tok.decode(raw.body, skip_special_tokens=True),
                n_tokens=raw.n_tokens,
                finish_reason="stop" if raw.stopped else "length",
                backend=self.name,
                request_id=requests[raw.prompt_index].request_id,
            )
            for raw in raws
        ]


@dataclass(frozen=True)
class Generation:
    """One answer from `generate` (the simple function API)."""

    prompt_index: int
    sample_index: int
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length"


def generate(
    lm: Any,
    prompts: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    n: int = 1,
    seed: int = 0,
    token_budget: int | None = None,
    decode: str | None = None,
) -> list[Generation]:
    """Answers to chat prompts, `n` per prompt, in (prompt, sample) order. temperature 0 = greedy.

    The function form of HFBackend for library use (steer with a surrounding `steer(...)` block).
    """
    params = SamplingParams(
        n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed
    )
    encoded = [encode_prompt(lm.tokenizer, messages) for messages in prompts]
    raws = generate_encoded(lm, encoded, params, token_budget=token_budget, decode=decode)
    return [
        Generation(
            prompt_index=raw.prompt_index,
            sample_index=raw.sample_index,
            text=lm.tokenizer.decode(raw.body, skip_special_tokens=True),
            n_tokens=raw.n_tokens,
            finish_reason="stop" if raw.stopped else "length",
        )
        for raw in raws
    ]

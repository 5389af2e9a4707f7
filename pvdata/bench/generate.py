"""`pvdata bench generate`: pvdata's HF backend vs the research code's batching, in the same run.

The research code generates in fixed batches of 20 prompts in input order (unsorted, left padded, one
HF generate call each). pvdata sorts rows by length and sizes batches by a token budget. Both sides get
the same chat prompts (built deterministically, of varied lengths), the same token ids, the same stop
tokens and greedy decoding, so the answers should match and only the batching differs.

A second section compares pvdata's two decode loops in the same run (alternating which goes first per
repeat): "drop" (finished rows leave the batch) and "hf" (HF generate runs every row until the longest
ends). Greedy float32 answers must be identical (a mismatch fails the bench; sampled or half-precision
runs report the count: a batch of another shape rounds the logits in the last bits, which can move a
near-tie or a draw that lands next to a CDF boundary); it prints the seconds of each,
their ratio and the row-steps (rows x one-token decode calls) each side computed.

`--model-shape` (e.g. qwen2.5-0.5b) runs on random weights of a real shape, for GPU machines without
weights: prompts are seeded random token ids of 32-224 tokens, and `--stop-fraction F` of the vocabulary
(seeded) counts as end-of-turn tokens. Random weights give near-flat logits, so with `--temperature 1`
each step stops with probability about F: answer lengths spread as real answers do (mean about 1/F,
capped at --max-new-tokens), which is what the drop loop saves on. The research comparison needs greedy
decoding and runs only at temperature 0. Needs only torch and transformers.

`--vllm` adds the vLLM backend against the HF backend on the same chat prompts (pvdata.bench.generate_vllm).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from typing import Any

RESEARCH_BATCH = 20

_TOPICS = [
    "my small vegetable garden",
    "a job interview next week",
    "learning to play the violin as an adult",
    "a disagreement with my neighbour about parking",
    "planning a budget trip to Portugal",
    "my cat that refuses to eat dry food",
    "switching careers from accounting to nursing",
    "a friend who keeps cancelling plans",
    "training for my first half marathon",
    "fixing a leaking kitchen tap",
    "a group project where nobody answers messages",
    "choosing between two used cars",
]
_DETAILS = [
    "I have tried a few things already but nothing has worked so far.",
    "Money is tight this month, so cheap options matter a lot to me.",
    "My partner thinks I am overthinking it, but I am not so sure.",
    "I only have about an hour each evening after work.",
    "Last time something similar happened it went badly and I still feel embarrassed about it.",
    "I would like an answer I can act on today, not a long essay.",
    "Please be honest even if the answer is not what I want to hear.",
    "I read a few articles online and they all said different things.",
    "My family has strong opinions about this and they are not shy about sharing them.",
    "I am a bit anxious about getting it wrong.",
    "There is also a deadline at the end of the month that I cannot move.",
    "Some people told me to just ignore it and see what happens.",
]
_ASKS = [
    "What would you do in my place?",
    "Can you give me three concrete steps?",
    "What am I missing here?",
    "How should I start?",
    "Is this a reasonable plan?",
]
_SYSTEMS = [None, None, "You are a helpful assistant.", "You are a concise, practical advisor."]


def build_prompts(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """n chat prompts of varied length (one to twelve detail sentences), the same for a given seed."""
    rng = random.Random(seed)
    prompts: list[list[dict[str, str]]] = []
    for _ in range(n):
        details = rng.sample(_DETAILS, rng.randint(0, len(_DETAILS)))
        text = f"I need advice about {rng.choice(_TOPICS)}. " + " ".join(details) + " " + rng.choice(_ASKS)
        system = rng.choice(_SYSTEMS)
        msgs = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": text})
        prompts.append(msgs)
    return prompts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="model alias, folder or hub id")
    parser.add_argument(
        "--model-shape",
        default=None,
        help="qwen2.5-0.5b | qwen2.5-7b | llama-3.1-8b | tiny: random weights of a real shape, random "
        "token prompts (instead of --model)",
    )
    parser.add_argument(
        "--stop-fraction",
        type=float,
        default=0.01,
        help="--model-shape: share of the vocabulary that ends a turn (mean answer about 1/F tokens when "
        "sampling)",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples (seeded per row)"
    )
    parser.add_argument("--prompts", type=int, default=64, help="number of chat prompts")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--token-budget", type=int, default=None, help="pvdata's padded tokens per batch")
    parser.add_argument("--prefill-budget", type=int, default=None, help="padded tokens per prefill call")
    parser.add_argument(
        "--repeats", type=int, default=1, help="time each side this many times, keep the best"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--vllm",
        action="store_true",
        help="also time the vLLM backend against the HF backend on the same prompts (needs vllm and --model)",
    )


def research_generate(
    lm: Any, encoded: Sequence[Sequence[int]], max_new_tokens: int, stops: list[int], batch_size: int
) -> list[tuple[list[int], bool]]:
    """The research code's loop: fixed batches in input order, left padded, greedy HF generate."""
    import torch

    tok, model = lm.tokenizer, lm.model
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    out: list[tuple[list[int], bool]] = []
    for start in range(0, len(encoded), batch_size):
        rows = encoded[start : start + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(list(row))
            mask[r, width - len(row) :] = 1
        with torch.inference_mode():
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                min_new_tokens=1,
                eos_token_id=stops,
                pad_token_id=pad_id,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        for tokens in gen[:, width:].tolist():
            cut = next((k for k, t in enumerate(tokens) if t in stops), None)
            out.append((tokens if cut is None else tokens[:cut], cut is not None))
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> int:
    from pvdata.bench.threads import with_threads

    return with_threads(args, _run)


class _ShapeTokenizer:
    """What generation needs from a tokenizer when the model is a random shape: a pad id, no vocab."""

    pad_token_id = 0
    eos_token_id = None

    def get_vocab(self) -> dict[str, int]:
        return {}


def shape_model(args: argparse.Namespace) -> tuple[Any, list[list[int]]]:
    """A random-weight model of `--model-shape` whose end-of-turn ids are a seeded `--stop-fraction` of
    the vocabulary, and `--prompts` seeded random prompts of 32-224 token ids (no stop ids in them)."""
    from pvdata.bench.shapes import build_shape
    from pvdata.errors import ConfigError
    from pvdata.models.layers import find_layers
    from pvdata.models.loading import LoadedModel, resolve_device, resolve_dtype

    if not 0 < args.stop_fraction < 1:
        raise ConfigError(f"--stop-fraction must be between 0 and 1, got {args.stop_fraction}")
    device = resolve_device(args.device)
    model = build_shape(
        args.model_shape, device=device, dtype=resolve_dtype(args.dtype, device), seed=args.seed
    )
    vocab = int(model.config.vocab_size)
    rng = random.Random(args.seed)
    stops = sorted(rng.sample(range(1, vocab), max(1, round(args.stop_fraction * vocab))))
    model.generation_config.eos_token_id = stops
    stop_set = set(stops)
    words = [t for t in range(1, vocab) if t not in stop_set]
    prompts = [[rng.choice(words) for _ in range(rng.randint(32, 224))] for _ in range(args.prompts)]
    lm = LoadedModel(
        model=model, tokenizer=_ShapeTokenizer(), model_id=args.model_shape, layers=find_layers(model)
    )
    return lm, prompts


def _run(args: argparse.Namespace) -> int:
    import torch

    from pvdata.chat import encode_prompt
    from pvdata.errors import ConfigError
    from pvdata.generation.base import SamplingParams
    from pvdata.generation.hf import (
        default_prefill_budget,
        default_token_budget,
        generate_encoded,
        stop_token_ids,
    )
    from pvdata.generation.hf_decode import DecodeStats, resolve_decode
    from pvdata.models.loading import load_model

    default_decode = resolve_decode()
    if args.vllm:
        from pvdata.generation.backends import vllm_installed

        if args.model_shape:
            raise ConfigError("--vllm needs --model (vLLM loads weights from a folder, not a --model-shape)")
        if not vllm_installed():
            raise ConfigError(
                "--vllm: vLLM is not installed (pip install 'pvdata[vllm]'; CPU: make test-vllm)"
            )
    encoded: list[Any]
    if args.model_shape:
        lm, encoded = shape_model(args)
    else:
        lm = load_model(args.model, dtype=args.dtype, device=args.device)
        encoded = [encode_prompt(lm.tokenizer, p) for p in build_prompts(args.prompts, args.seed)]
    device, dtype = lm.device, lm.dtype
    stops = stop_token_ids(lm.tokenizer, lm.model.generation_config)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    greedy = params.greedy
    budget = args.token_budget or default_token_budget()
    pbudget = args.prefill_budget or default_prefill_budget(device)
    lengths = sorted(len(e) for e in encoded)
    print(f"model: {lm.model_id}  device: {device}  dtype: {str(dtype).replace('torch.', '')}")
    print(f"torch {torch.__version__}  threads: {torch.get_num_threads()}")
    print(
        f"prompts: {len(encoded)}  prompt tokens min/median/max: {lengths[0]}/{lengths[len(lengths) // 2]}/"
        f"{lengths[-1]}  max_new_tokens: {args.max_new_tokens}  "
        f"{'greedy' if greedy else f'temperature {args.temperature}'}  stop ids: {len(stops)}"
    )

    # warm-up both paths (allocator, kernels) on a few prompts
    if greedy:
        research_generate(lm, encoded[:4], 4, stops, RESEARCH_BATCH)
    for mode in ("drop", "hf"):
        generate_encoded(lm, encoded[:4], SamplingParams(max_new_tokens=4), token_budget=budget, decode=mode)

    t_ref = float("inf")
    ref: list[tuple[list[int], bool]] = []
    best = {"drop": float("inf"), "hf": float("inf")}
    answers: dict[str, list[Any]] = {"drop": [], "hf": []}
    stats = {"drop": DecodeStats(), "hf": DecodeStats()}
    batches = {"n": 0}
    for repeat in range(max(1, args.repeats)):
        if greedy:  # the research loop is greedy HF generate
            _sync(device)
            t0 = time.perf_counter()
            ref = research_generate(lm, encoded, args.max_new_tokens, stops, RESEARCH_BATCH)
            _sync(device)
            t_ref = min(t_ref, time.perf_counter() - t0)
        for mode in ("drop", "hf") if repeat % 2 == 0 else ("hf", "drop"):
            batches["n"] = 0
            stats[mode] = DecodeStats()
            _sync(device)
            t0 = time.perf_counter()
            answers[mode] = generate_encoded(
                lm,
                encoded,
                params,
                token_budget=budget,
                prefill_budget=pbudget,
                on_batch=lambda *_: batches.__setitem__("n", batches["n"] + 1),
                decode=mode,
                stats=stats[mode],
            )
            _sync(device)
            best[mode] = min(best[mode], time.perf_counter() - t0)
    new = answers[default_decode]
    t_new = best[default_decode]

    new_tokens = sum(r.n_tokens for r in new)
    if greedy:
        ref_tokens = sum(len(body) + int(stopped) for body, stopped in ref)
        n_ref_batches = -(-len(encoded) // RESEARCH_BATCH)
        print(
            f"research batches ({n_ref_batches} x {RESEARCH_BATCH}, input order): "
            f"{len(encoded) / t_ref:8.2f} prompts/s  {ref_tokens / t_ref:9.1f} generated tokens/s  "
            f"({t_ref:.2f} s)"
        )
    answer_lengths = sorted(r.n_tokens for r in new)
    print(
        f"answer tokens min/median/max: {answer_lengths[0]}/{answer_lengths[len(answer_lengths) // 2]}/"
        f"{answer_lengths[-1]}  stopped before the limit: {sum(r.stopped for r in new)}/{len(new)}"
    )
    mismatched = sum(1 for a, b in zip(answers["drop"], answers["hf"], strict=True) if a != b)
    for mode, what in (
        ("drop", "finished rows leave the batch"),
        ("hf", "HF generate, every row to the end"),
    ):
        tokens = sum(r.n_tokens for r in answers[mode])
        print(
            f"decode {mode} ({what}): {best[mode]:.2f} s  {tokens / best[mode]:9.1f} generated tokens/s  "
            f"row-steps {stats[mode].row_steps} ({stats[mode].steps} one-token calls)"
        )
    saved = stats["hf"].row_steps - stats["drop"].row_steps
    print(
        f"decode hf/drop time ratio: {best['hf'] / best['drop']:.2f}  row-steps saved {saved} "
        f"({100.0 * saved / max(1, stats['hf'].row_steps):.1f}% of hf's)  same answers drop/hf: "
        f"{len(answers['hf']) - mismatched}/{len(answers['hf'])}"
    )
    if mismatched and dtype == torch.float32 and greedy:
        print(f"FAIL: decode drop and hf gave different answers for {mismatched} prompt(s)")
        return 1
    if mismatched:  # a smaller batch rounds the logits differently: a near-tie can go the other way
        print(
            f"note: {mismatched} answer(s) differ ({str(dtype).replace('torch.', '')}, "
            f"{'greedy' if greedy else 'sampled'}): batch-shape rounding of a near-tie or of a draw next to "
            "a CDF boundary; greedy --dtype float32 checks equality"
        )
    print(
        f"pvdata hf decode={default_decode} ({batches['n']} decode batch(es), sorted prefill <= {pbudget} "
        "tokens): "
        f"{len(encoded) / t_new:8.2f} prompts/s  {new_tokens / t_new:9.1f} generated tokens/s  "
        f"({t_new:.2f} s)"
    )
    if args.vllm:
        from pvdata.bench.generate_vllm import compare_vllm

        compare_vllm(lm, args.model, build_prompts(args.prompts, args.seed), params, args)
    if greedy:
        same = sum(1 for (body, _), r in zip(ref, new, strict=True) if body == r.body)
        print(f"identical_answers: {same}/{len(encoded)}")
        print(f"speedup_vs_research_batches: {t_ref / t_new:.2f}")
    return 0

"""`pvdata bench extract`: batched capture vs the research code's per-sample loop, in the same run.

Samples are seeded random token ids of realistic lengths (a chat prompt, then an answer); the compute
is what matters and both sides get the same ids. Needs only torch and transformers.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

PAPER_LAYER_FRACTION = 20 / 28  # the paper steers Qwen2.5-7B (28 blocks) at layer 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model alias, folder or hub id")
    parser.add_argument("--model-shape", default=None, help="qwen2.5-0.5b | qwen2.5-7b | llama-3.1-8b")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--layer", type=int, default=None, help="layer to capture (default: 20/28 depth)")
    parser.add_argument("--prompt-tokens", default="32-64", help="range of prompt lengths, e.g. 32-64")
    parser.add_argument("--response-tokens", default="96-192", help="range of answer lengths")
    parser.add_argument("--token-budget", type=int, default=None, help="padded tokens per batch")
    parser.add_argument(
        "--reference-samples",
        type=int,
        default=None,
        help="time the reference loop on the first K samples only (its rate is per sample)",
    )
    parser.add_argument(
        "--reference-no-grad",
        action="store_true",
        help="run the reference under torch.no_grad (the research code runs it with autograd on)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: known GPUs)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="prefetch on/off pairs to time (best of each kept)"
    )
    from pvdata.bench.overlap import add_overlap_arguments

    add_overlap_arguments(parser, out_flag=False)
    from pvdata.bench.compile_pair import add_compile_arguments

    add_compile_arguments(parser)


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def _load(args: argparse.Namespace) -> Any:
    from pvdata.bench.shapes import load_bench_model

    return load_bench_model(args)


def make_samples(n: int, vocab: int, prompt: tuple[int, int], response: tuple[int, int], seed: int) -> list:
    rng = random.Random(seed)
    low = min(1000, vocab // 4)  # avoid the special tokens that sit at the start of most vocabularies
    out = []
    for _ in range(n):
        p = [rng.randrange(low, vocab) for _ in range(rng.randint(*prompt))]
        a = [rng.randrange(low, vocab) for _ in range(rng.randint(*response))]
        out.append((p, a))
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> int:
    import torch

    from pvdata.activations.capture import capture_encoded
    from pvdata.activations.reference import capture_reference
    from pvdata.bench.compile_pair import check_compile_argument
    from pvdata.bench.shapes import block_params, peak_flops

    check_compile_argument(args)
    lm = _load(args)
    model = lm.model
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n_layers = lm.n_layers
    layer = args.layer if args.layer is not None else max(1, round(n_layers * PAPER_LAYER_FRACTION))
    lm.layers.check_layer(layer)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    samples = make_samples(
        args.samples, vocab, _range(args.prompt_tokens), _range(args.response_tokens), args.seed
    )
    n_tokens = sum(len(p) + len(a) for p, a in samples)
    k = min(args.reference_samples or len(samples), len(samples))
    ref_samples = samples[:k]
    ref_tokens = sum(len(p) + len(a) for p, a in ref_samples)

    print(f"model: {lm.model_id}  device: {device}  dtype: {str(dtype).replace('torch.', '')}")
    print(f"blocks: {n_layers}  layer: {layer}  samples: {len(samples)}  tokens: {n_tokens}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"torch {torch.__version__}  threads: {torch.get_num_threads()}")

    # warm-up both paths (kernels, allocator) on a few samples
    capture_encoded(lm, samples[:4], layers=[layer], token_budget=args.token_budget)
    capture_reference(lm, samples[:2], [layer], grad=not args.reference_no_grad)

    _sync(device)
    t0 = time.perf_counter()
    ref = capture_reference(lm, ref_samples, [layer], grad=not args.reference_no_grad)
    _sync(device)
    t_ref = time.perf_counter() - t0

    _sync(device)
    t0 = time.perf_counter()
    res = capture_encoded(
        lm, samples, layers=[layer], token_budget=args.token_budget, prefetch_batches=not args.no_prefetch
    )
    _sync(device)
    t_new = time.perf_counter() - t0

    worst = 0.0
    for pooling in ("prompt_avg", "response_avg", "prompt_last"):
        a, b = res.values[pooling][:k], ref[pooling]
        scale = b.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)
        worst = max(worst, float(((a - b).abs() / scale).max()))
    tol = 1e-3 if dtype == torch.float32 else 6e-2
    ref_rate, new_rate = k / t_ref, len(samples) / t_new
    ref_tps, new_tps = ref_tokens / t_ref, n_tokens / t_new
    grad_note = "no_grad" if args.reference_no_grad else "autograd on, as the research code"
    print(f"reference loop ({grad_note}, {k} samples): {ref_rate:8.2f} samples/s  {ref_tps:10.0f} tokens/s")
    print(
        f"pvdata batched ({res.stats['batches']:.0f} batches):            "
        f"{new_rate:8.2f} samples/s  {new_tps:10.0f} tokens/s"
    )
    print(f"max_rel_diff: {worst:.2e} (tolerance {tol:.0e}) -> {'match' if worst <= tol else 'MISMATCH'}")
    flops_per_token = 2 * block_params(model, layer)
    hidden = lm.hidden_size
    mean_len = n_tokens / len(samples)
    flops_per_token += 2 * 2 * hidden * layer * mean_len / 2  # causal attention scores + mix, per token
    achieved = flops_per_token * new_tps
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device, dtype)
    print(f"model_tflops_per_s: {achieved / 1e12:.2f}" + (f"  mfu: {achieved / peak:.1%}" if peak else ""))
    print(f"pvdata_tokens_per_s: {new_tps:.0f}")
    identical = _overlap(args, lm, samples, layer, flops_per_token * n_tokens, peak)
    if args.compile is not None:
        identical = _compiled(args, lm, samples, layer, tol) and identical
    print(f"speedup_vs_reference_loop: {new_rate / ref_rate:.2f}")  # the headline stays the last line
    return 0 if worst <= tol and identical else 1


def _compiled(args: argparse.Namespace, lm: Any, samples: list, layer: int, tol: float) -> bool:
    """Eager vs compiled capture of the same samples; True when they match within `tol`."""
    from pvdata.activations.capture import capture_encoded
    from pvdata.bench.compile_pair import compile_pair, print_compile
    from pvdata.models.compiled import compiled_blocks

    def one_pass(mode: str | None) -> Any:
        with compiled_blocks(lm, layer, mode):
            return capture_encoded(lm, samples, layers=[layer], token_budget=args.token_budget).values

    result = compile_pair(one_pass, args.compile, args.repeats, lambda: _sync(lm.device))
    return print_compile(result, "pvdata capture_encoded", tol)


def _overlap(
    args: argparse.Namespace, lm: Any, samples: list, layer: int, flops: float, peak: float | None
) -> bool:
    """Prefetch on vs off (the host work here: padding into tensors; the ids are pre-tokenised), the
    device's idle share, and with --profile a trace of one prefetched pass. True when on == off."""
    from pvdata.activations.capture import capture_encoded
    from pvdata.bench.overlap import add_mfu, paired_passes, print_overlap, profile_dir, profile_pass

    device = lm.device

    def one_pass(on: bool, timings: Any) -> Any:
        res = capture_encoded(
            lm, samples, layers=[layer], token_budget=args.token_budget, prefetch_batches=on, timings=timings
        )
        return res.values

    overlap, _ = paired_passes(one_pass, args.repeats, lambda: _sync(device))
    add_mfu(overlap, flops, peak)
    print_overlap(overlap, "pvdata capture_encoded")
    for key in ("host_prep_s", "device_s", "device_idle_share"):
        print(f"{key}: {overlap['prefetch'][key]:.4f}")
    print(f"prefetch_speedup: {overlap['speedup']:.2f}")
    folder = profile_dir(args)
    if folder is not None:
        print(f"profile: {profile_pass(one_pass, folder, 'extract', device, lambda: _sync(device))}")
    return bool(overlap["identical"])

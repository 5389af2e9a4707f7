"""`pvdata bench train`: LoRA training step time, plain vs with preventative steering + monitoring.

Both sides run pvdata's training loop on the same model, data and LoRA (the paper's: rsLoRA r 32 on the
seven projections) in the same process; the steered side adds coef * v at one layer (or every layer
with --all-layers, incremental) and reads the monitored projection each micro-batch. It prints the
median step time of each, tokens/s, the model FLOP/s (4 x parameters x tokens: LoRA computes no
gradients for the frozen weights) and the steering overhead. Samples are seeded random token ids
(a prompt, then an answer whose tokens are trained). `--model-shape` builds a random-initialised model
of a real shape (no weights needed); needs only torch, transformers and peft:

    python -m pvdata.bench train --model-shape qwen2.5-7b --dtype bfloat16 --device cuda
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

PAPER_LAYER_FRACTION = 20 / 28  # the paper steers Qwen2.5-7B (28 blocks) at layer 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model alias, folder or hub id")
    parser.add_argument(
        "--model-shape", default=None, help="qwen2.5-0.5b | qwen2.5-7b | llama-3.1-8b | tiny (random weights)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (kernels, allocator)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--response-tokens", type=int, default=448, help="trained tokens per sample")
    parser.add_argument("--layer", type=int, default=None, help="steered and monitored layer (default 20/28)")
    parser.add_argument("--coef", type=float, default=4.0)
    parser.add_argument("--all-layers", action="store_true", help="steer every layer, incremental vectors")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: known GPUs)")


def _load(args: argparse.Namespace) -> Any:
    from pvdata.bench.shapes import load_bench_model

    return load_bench_model(args, seed=args.seed)


def make_samples(n: int, vocab: int, prompt: int, response: int, seed: int) -> list[Any]:
    """Seeded random ids; the answer's tokens are trained and projected, the prompt's are not."""
    from pvdata.training.data import EncodedSample

    rng = random.Random(seed)
    low = min(1000, vocab // 4)  # skip the special tokens at the start of most vocabularies
    out = []
    for _ in range(n):
        ids = tuple(rng.randrange(low, vocab) for _ in range(prompt + response))
        mask = (False,) * prompt + (True,) * response
        out.append(EncodedSample(ids, mask, mask))
    return out


def _side(
    lm: Any, samples: list[Any], args: argparse.Namespace, steering: Any, monitor: Any
) -> dict[str, float]:
    import torch

    from pvdata.training.loop import LoopSettings, LoraTrainer

    settings = LoopSettings(
        lr=1e-5,
        warmup_steps=0,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_steps=args.warmup + args.steps,
        seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    device = next(lm.model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = LoraTrainer(lm, samples, settings, steering=steering, monitor=monitor)
    metrics = trainer.train()
    times = [m.seconds for m in metrics if m.split == "train"][args.warmup :]
    tokens = statistics.mean(m.n_tokens for m in metrics if m.split == "train")
    seq_tokens = args.batch_size * args.grad_accum * (args.prompt_tokens + args.response_tokens)
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "tokens_per_s": seq_tokens / median,
        "trained_tokens": tokens,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else float("nan"),
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from pvdata.bench.shapes import peak_flops
    from pvdata.steering import SteeringSpec
    from pvdata.training.loop import LoraParams, MonitorSetup, SteeringSetup, prepare_lora

    if args.steps < 1 or args.warmup < 0:
        from pvdata.errors import ConfigError

        raise ConfigError("--steps must be >= 1 and --warmup >= 0")
    lm = _load(args)
    n_layers = lm.n_layers
    layer = args.layer if args.layer is not None else max(1, round(n_layers * PAPER_LAYER_FRACTION))
    lm.layers.check_layer(layer, allow_embedding=False)
    total_params = sum(p.numel() for p in lm.model.parameters())
    vocab = int(lm.model.get_input_embeddings().weight.shape[0])
    prepare_lora(lm, LoraParams(), seed=args.seed)
    trainable = sum(p.numel() for p in lm.model.parameters() if p.requires_grad)
    device = next(lm.model.parameters()).device
    dtype = next(p for p in lm.model.parameters() if not p.requires_grad).dtype
    n = args.batch_size * args.grad_accum * (args.warmup + args.steps)
    samples = make_samples(n, vocab, args.prompt_tokens, args.response_tokens, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    vector = torch.randn(n_layers + 1, lm.hidden_size, generator=gen)
    layers = tuple(range(1, n_layers + 1)) if args.all_layers else (layer,)
    spec = SteeringSpec(layers=layers, coef=args.coef, incremental=args.all_layers)

    print(f"model: {lm.model_id}  device: {device}  dtype: {str(dtype).replace('torch.', '')}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"torch {torch.__version__}  threads: {torch.get_num_threads()}")
    print(
        f"blocks: {n_layers}  params: {total_params / 1e6:.1f}M  LoRA trainable: {trainable / 1e6:.2f}M  "
        f"steered: {'all (incremental)' if args.all_layers else layer}  monitored: {layer}"
    )
    print(
        f"step: {args.batch_size} x {args.grad_accum} samples of {args.prompt_tokens} prompt + "
        f"{args.response_tokens} trained tokens; {args.warmup} warm-up + {args.steps} timed steps per side"
    )
    plain = _side(lm, samples, args, None, None)
    steered = _side(lm, samples, args, SteeringSetup(vector, spec), MonitorSetup(vector, layer))
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device, dtype)
    for name, r in (("plain", plain), ("steered+monitor", steered)):
        flops = 4 * total_params * r["tokens_per_s"]
        mfu = f"  mfu: {flops / peak:.1%}" if peak else ""
        mem = f"  peak_mem: {r['peak_gib']:.1f} GiB" if r["peak_gib"] == r["peak_gib"] else ""
        print(
            f"{name:>16}: step {r['median_s']:.3f} s (min {r['min_s']:.3f}, max {r['max_s']:.3f})  "
            f"{r['tokens_per_s']:9.0f} tokens/s  model_tflops_per_s: {flops / 1e12:.2f}{mfu}{mem}"
        )
    print(f"train_step_seconds: {plain['median_s']:.3f}")
    print(f"steered_step_seconds: {steered['median_s']:.3f}")
    print(f"steering_overhead: {steered['median_s'] / plain['median_s']:.3f}")
    return 0

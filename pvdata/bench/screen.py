"""`pvdata bench screen`: pvdata's batched screening vs the research code's per-sample loop, same run.

Two comparisons on the same samples, in one process:

(a) approximation: pvdata's `score_batch` (methods prompt_last_approx + raw: one forward pass per text,
    length-sorted token-budget batches, hooks on the scored layer only, the forward stopped there) vs the
    research code's projection loop (eval/cal_projection.py: one sample per forward with
    output_hidden_states for every layer and autograd on, mean over the answer tokens, dot with the unit
    vector), run twice as the research code needs for the approximation: its script computes one projection
    type per invocation (proj, then prompt_last_proj); `--reference-passes 1` reads both from one forward;
(b) exact: the base answers through pvdata's HF generation backend (what `pvdata screen --backend hf`
    uses), then `score_batch` (methods raw + exact) over the training and base answers, vs the research
    loop with the base answer generated per sample by `model.generate` (greedy), decoded, then one
    forward per text.

Both sides start from chat messages and answer text (tokenisation is timed on both) and use the same
token ids: pvdata's exact prompt/answer boundary (the research code tokenises prompt + answer as one
string) and float32 pooling, so the scores must agree; the bench fails when they differ by more than a
tolerance, and the speed comparison is of equal results. Base answers are compared too (greedy on both
sides; bfloat16 can flip a near-tie, which is reported, and such a sample's score is checked against
the reference's forward over pvdata's base answer).

Needs only torch and transformers (no warehouse, duckdb, polars, pyarrow or gguf): it is meant to run on
GPU machines without the CLI extras. `--model-shape` builds a random-initialised model of a real shape
with a word-level tokenizer over its whole vocabulary (one token per word, exact round trip), so no
weights or tokenizer files are needed:

    python -m pvdata.bench screen --model-shape qwen2.5-0.5b --dtype bfloat16 --device cuda

This module is the CLI; the parts beside it: screen_data (samples, tokenizer, vector, model),
screen_reference (the research code's loops), screen_pvdata (pvdata's side), screen_measure (checks,
FLOPs, timed rounds) and screen_overlap (prefetch on/off through the executor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pvdata.bench.screen_data import (
    BenchVector,
    demo_samples,
    load_screen_model,
    parse_range,
    random_vector,
    synthetic_samples,
)
from pvdata.bench.screen_measure import (
    best_time,
    compare,
    count_tokens,
    interleave_rounds,
    param_counts,
    score_scale,
    side_rates,
    timed_rounds,
)
from pvdata.bench.screen_pvdata import APPROX_METHODS, EXACT_METHODS, PvExact, pvdata_approx, pvdata_exact
from pvdata.bench.screen_reference import (
    RefExact,
    reference_approx,
    reference_exact,
    reference_projections,
    unit_row,
)

SCREEN_LAYER_FRACTION = 0.75  # `pvdata screen`'s default layer (no evaluate run): 0.75 of the depth
RTOL = {"float32": 1e-3, "half": 6e-2}  # of the largest |projection| of the reference
# prompt_last_approx and exact are differences of two projections, each within RTOL x scale of the
# reference's, so a score is within twice that (bf16 over 21 blocks of a 7B shape came to 1.03x of one)
TERMS = 2

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model alias, folder or hub id (e.g. smollm2-135m)")
    parser.add_argument(
        "--model-shape",
        default=None,
        help="qwen2.5-0.5b | qwen2.5-7b | llama-3.1-8b | tiny: random weights of a real shape, no files",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--layer", type=int, default=None, help="scored layer (default: 0.75 of the depth)")
    parser.add_argument(
        "--data",
        choices=("demo", "synthetic"),
        default=None,
        help="demo: pvdata/data/demo_chat.jsonl repeated (each copy a distinct sample); synthetic: seeded "
        "random prompts and answers of --prompt-tokens / --response-tokens (default: demo with --model, "
        "synthetic with --model-shape)",
    )
    parser.add_argument("--samples", type=int, default=256, help="samples for the approximation")
    parser.add_argument(
        "--reference-samples",
        type=int,
        default=None,
        help="time the approximation's reference loop on the first K samples only (its rate is per sample)",
    )
    parser.add_argument(
        "--exact-samples", type=int, default=32, help="samples for exact, with base generation (0: skip)"
    )
    parser.add_argument(
        "--exact-reference-samples",
        type=int,
        default=None,
        help="time exact's reference loop on the first K exact samples only (its rate is per sample)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="base answer length limit (exact)")
    parser.add_argument("--prompt-tokens", default="32-64", help="synthetic prompt lengths, e.g. 32-64")
    parser.add_argument("--response-tokens", default="96-192", help="synthetic answer lengths")
    parser.add_argument(
        "--token-budget", type=int, default=None, help="padded tokens per scoring batch (pvdata's default)"
    )
    parser.add_argument(
        "--gen-token-budget", type=int, default=None, help="padded tokens per generation batch"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=64,
        help="samples per score_batch / generate call, as `pvdata screen --chunk-size` (default 64)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="shorthand: --chunk-size N (samples per call; batches inside it follow the token budget)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="time each side this many times, keep the best"
    )
    parser.add_argument(
        "--reference-passes",
        type=int,
        choices=(1, 2),
        default=2,
        help="approximation reference: 2 forwards per sample as the research code (one invocation per "
        "projection type: proj, prompt_last_proj), or 1 (both read from one forward)",
    )
    parser.add_argument(
        "--reference-no-grad",
        action="store_true",
        help="run the reference forwards under torch.no_grad (the research code runs them with autograd on)",
    )
    parser.add_argument("--tolerance", type=float, default=None, help="max abs score difference allowed")
    parser.add_argument(
        "--reference-vector-noise",
        type=float,
        default=0.0,
        help="perturb the vector the reference projects onto by this fraction of its norm (tests the check)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall: elapsed time; process: this process's CPU time (CPU only; with --threads 1 it does not "
        "count the time other jobs take the cores, for ratios on a shared machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: known GPUs)")
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    from pvdata.bench.overlap import add_overlap_arguments

    add_overlap_arguments(parser, out_flag=True)
    from pvdata.bench.compile_pair import add_compile_arguments

    add_compile_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pvdata.bench.threads import with_threads

    return with_threads(args, _run)


def _run(args: argparse.Namespace) -> int:
    import torch

    from pvdata.bench.shapes import peak_flops
    from pvdata.errors import ConfigError

    if args.batch_size:
        args.chunk_size = args.batch_size
    if args.samples < 1 or args.exact_samples < 0 or args.chunk_size < 1 or args.repeats < 1:
        raise ConfigError("--samples, --chunk-size and --repeats must be >= 1, --exact-samples >= 0")
    from pvdata.bench.compile_pair import check_compile_argument

    check_compile_argument(args)
    lm = load_screen_model(args)
    model, tok = lm.model, lm.tokenizer
    device, dtype = lm.device, lm.dtype
    n_layers, hidden = lm.n_layers, lm.hidden_size
    layer = args.layer if args.layer is not None else int(n_layers * SCREEN_LAYER_FRACTION + 0.5)
    lm.layers.check_layer(layer, allow_embedding=False)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    data = args.data or ("synthetic" if args.model_shape else "demo")
    n_all = max(args.samples, args.exact_samples)
    if data == "demo":
        samples = demo_samples(n_all)
    else:
        prompt, response = parse_range(args.prompt_tokens), parse_range(args.response_tokens)
        samples = synthetic_samples(n_all, tok, vocab, prompt, response, args.seed)
    approx_samples = samples[: args.samples]
    k = min(args.reference_samples or len(approx_samples), len(approx_samples))
    ref_samples = approx_samples[:k]
    exact_samples = samples[: args.exact_samples]
    k_exact = min(args.exact_reference_samples or len(exact_samples), len(exact_samples))
    vector = random_vector(n_layers, hidden, args.seed)
    ref_vector = random_vector(n_layers, hidden, args.seed, args.reference_vector_noise)
    grad = not args.reference_no_grad
    prefetch = not args.no_prefetch
    half = dtype in (torch.bfloat16, torch.float16)
    rtol = RTOL["half" if half else "float32"]
    params = param_counts(model, layer)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device, dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.clock == "process" and device.type != "cpu":
        raise ConfigError("--clock process measures CPU time: use it with --device cpu")
    clock = CLOCKS[args.clock]

    dtype_name = str(dtype).replace("torch.", "")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"model: {lm.model_id}  device: {device}  dtype: {dtype_name}" + (f"  gpu: {gpu}" if gpu else ""))
    print(
        f"torch {torch.__version__}  threads: {torch.get_num_threads()}  blocks: {n_layers}  layer: {layer}  "
        f"params to layer / all blocks / head: {params['blocks_to_layer'] / 1e6:.1f}M / "
        f"{params['blocks'] / 1e6:.1f}M / {params['head'] / 1e6:.1f}M"
    )
    print(
        f"data: {data}  approx samples: {len(approx_samples)} (reference: {k})  exact samples: "
        f"{len(exact_samples)} (reference: {k_exact})  "
        f"max_new_tokens: {args.max_new_tokens}  chunk: {args.chunk_size}  "
        f"token budget: {args.token_budget or 'default'}  clock: {args.clock}  reference: "
        f"{'autograd on, as the research code' if grad else 'no_grad'}, "
        f"{args.reference_passes} forward(s) per sample for the approximation"
    )

    # warm-up (kernels, allocator, tokenizer caches) on a few samples, both sides
    pvdata_approx(lm, approx_samples[:2], vector, layer, args.chunk_size, args.token_budget)
    reference_approx(lm, approx_samples[:1], ref_vector, layer, grad, 1)
    if exact_samples:
        pvdata_exact(lm, exact_samples[:2], vector, layer, 2, 2, args.token_budget, None, args.seed, sync)
        reference_exact(lm, exact_samples[:1], ref_vector, layer, 2, grad)

    # (a) approximation: the two sides alternate chunk by chunk (see interleave_rounds)
    rounds = interleave_rounds(len(approx_samples), k, args.chunk_size)
    t_ref: list[float] = []
    t_pv: list[float] = []
    ref_a: list[dict[str, float]] = []
    pv_a: dict[tuple[str, str], float | None] = {}
    ref_tokens = 0
    for rep in range(args.repeats):
        tr, tp, ref_parts, pv_parts = timed_rounds(
            rounds,
            lambda part: reference_approx(
                lm, ref_samples[part], ref_vector, layer, grad, args.reference_passes
            ),
            lambda part: pvdata_approx(
                lm, approx_samples[part], vector, layer, args.chunk_size, args.token_budget, prefetch
            ),
            sync,
            flip=rep % 2 == 1,
            clock=clock,
        )
        t_ref.append(tr)
        t_pv.append(tp)
        ref_a = [row for rows, _ in ref_parts for row in rows]
        ref_tokens = sum(n for _, n in ref_parts)
        pv_a = {key: value for part in pv_parts for key, value in part.items()}
    t0 = clock()
    pv_tokens = count_tokens(tok, approx_samples)  # the chat template + tokenisation score_batch does
    t_tok = clock() - t0
    diff_a, one_sided_a = compare(pv_a, ref_a, ref_samples, APPROX_METHODS)
    tol_a = (
        args.tolerance
        if args.tolerance is not None
        else TERMS * rtol * score_scale(ref_a, ("proj", "prompt_last_proj"))
    )
    fl = 2 * params["blocks_to_layer"]
    approx: dict[str, Any] = {
        "methods": list(APPROX_METHODS),
        "reference": side_rates(best_time(t_ref), k, ref_tokens, fl * ref_tokens, peak),
        "pvdata": side_rates(best_time(t_pv), len(approx_samples), pv_tokens, fl * pv_tokens, peak),
        "times_reference": t_ref,
        "times_pvdata": t_pv,
        "max_abs_diff": diff_a,
        "one_sided_scores": one_sided_a,
        "tolerance": tol_a,
        "match": diff_a <= tol_a and one_sided_a == 0,
    }
    approx["speedup"] = approx["pvdata"]["samples_per_s"] / approx["reference"]["samples_per_s"]
    approx["pvdata"]["tokenize_seconds"] = t_tok  # timed apart; part of pvdata's seconds
    from pvdata.bench.screen_overlap import screen_overlap

    overlap, trace = screen_overlap(args, lm, approx_samples, vector, layer, fl * pv_tokens, peak, sync)
    compiled = None
    if args.compile is not None:
        from pvdata.bench.screen_overlap import screen_compiled

        compiled = screen_compiled(args, lm, approx_samples, vector, layer, sync)
        compiled["tolerance"] = rtol

    exact: dict[str, Any] | None = None
    if exact_samples:
        exact = _run_exact(args, lm, exact_samples, vector, ref_vector, layer, grad, params, peak, sync)
        scale = exact.pop("scale")
        exact["tolerance"] = args.tolerance if args.tolerance is not None else TERMS * rtol * scale
        exact["match"] = (
            exact["max_abs_diff"] <= exact["tolerance"]
            and exact["one_sided_scores"] == 0
            and (half or exact["base_answers_identical"] == exact["compared"])
        )

    result: dict[str, Any] = {
        "bench": "screen",
        "model": lm.model_id,
        "device": str(device),
        "gpu": gpu,
        "dtype": dtype_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "n_layers": n_layers,
        "layer": layer,
        "params": params,
        "peak_tflops": peak / 1e12 if peak else None,
        "data": data,
        "max_new_tokens": args.max_new_tokens,
        "chunk_size": args.chunk_size,
        "token_budget": args.token_budget,
        "gen_token_budget": args.gen_token_budget,
        "reference_grad": grad,
        "reference_passes": args.reference_passes,
        "repeats": args.repeats,
        "clock": args.clock,
        "prefetch": prefetch,
        "approx": approx,
        "exact": exact,
        "overlap": overlap,
        "profile": str(trace) if trace else None,
        "compile": compiled,
    }
    result["match"] = approx["match"] and (exact is None or exact["match"]) and overlap["identical"]
    result["match"] = result["match"] and (compiled is None or compiled["rel_diff"] <= rtol)
    _print_table(result)
    from pvdata.bench.overlap import print_overlap

    print_overlap(overlap, "pvdata screening approximation through the local executor")
    if compiled is not None:
        from pvdata.bench.compile_pair import print_compile

        print_compile(compiled, "pvdata screening approximation through the local executor", rtol)
    if trace:
        print(f"profile: {trace}")
    line = json.dumps(result, sort_keys=True)
    print(line)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(line + "\n")
    if not result["match"]:
        print(
            "pvdata bench screen: MISMATCH: pvdata's scores differ from the reference's "
            f"(approx max abs diff {diff_a:.3g}, tolerance {tol_a:.3g}"
            + (
                f"; exact max abs diff {exact['max_abs_diff']:.3g}, base answers identical "
                f"{exact['base_answers_identical']}/{exact['compared']}"
                if exact
                else ""
            )
            + "): the timings are not of equal results",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_exact(
    args: argparse.Namespace,
    lm: Any,
    samples: Sequence[Any],
    vector: BenchVector,
    ref_vector: BenchVector,
    layer: int,
    grad: bool,
    params: dict[str, int],
    peak: float | None,
    sync: Callable[[], None],
) -> dict[str, Any]:
    from pvdata.chat import encode_answer, encode_prompt

    clock = CLOCKS[args.clock]
    k = min(args.exact_reference_samples or len(samples), len(samples))
    ref_samples = samples[:k]
    rounds = interleave_rounds(len(samples), k, args.chunk_size)
    t_ref: list[float] = []
    t_pv: list[float] = []
    ref: RefExact | None = None
    pv: PvExact | None = None
    for rep in range(args.repeats):
        tr, tp, ref_parts, pv_parts = timed_rounds(
            rounds,
            lambda part: reference_exact(lm, ref_samples[part], ref_vector, layer, args.max_new_tokens, grad),
            lambda part: pvdata_exact(
                lm,
                samples[part],
                vector,
                layer,
                args.max_new_tokens,
                args.chunk_size,
                args.token_budget,
                args.gen_token_budget,
                args.seed,
                sync,
                clock,
            ),
            sync,
            flip=rep % 2 == 1,
            clock=clock,
        )
        t_ref.append(tr)
        t_pv.append(tp)
        ref = RefExact(
            [row for r in ref_parts for row in r.scores],
            [t for r in ref_parts for t in r.base_texts],
            sum(r.prompt_tokens for r in ref_parts),
            sum(r.generated_tokens for r in ref_parts),
            sum(r.scored_tokens for r in ref_parts),
        )
        pv = PvExact(
            {key: value for r in pv_parts for key, value in r.scores.items()},
            [t for r in pv_parts for t in r.base_texts],
            sum(r.generated_tokens for r in pv_parts),
            sum(r.gen_seconds for r in pv_parts),
            sum(r.score_seconds for r in pv_parts),
        )
    assert ref is not None and pv is not None
    same = [a == b for a, b in zip(pv.base_texts[:k], ref.base_texts, strict=True)]
    # where greedy decoding diverged (a bf16 near-tie), check the scoring on pvdata's base answer
    ref_scores = list(ref.scores)
    tok, unit = lm.tokenizer, unit_row(ref_vector, layer)
    for i, ok in enumerate(same):
        if ok:
            continue
        prompt_ids = encode_prompt(tok, samples[i].prompt)
        base_ids = encode_answer(tok, pv.base_texts[i])
        base = reference_projections(lm, prompt_ids, base_ids, unit, layer, False)[0] if base_ids else None
        train = ref_scores[i]["proj"]
        ref_scores[i] = {**ref_scores[i], "exact": None if base is None else train - base, "proj_base": base}
    diff, one_sided = compare(pv.scores, ref_scores, ref_samples, EXACT_METHODS)
    # useful FLOPs: generation runs every block for the prompt and every block + lm_head per new token;
    # scoring runs the blocks up to the layer over both texts (prompt + answer each)
    per_gen, per_block, per_score = (
        2 * (params["blocks"] + params["head"]),
        2 * params["blocks"],
        2 * params["blocks_to_layer"],
    )
    fl_ref = per_gen * ref.generated_tokens + per_block * ref.prompt_tokens + per_score * ref.scored_tokens
    pv_prompt = pv_scored = 0
    for s, text in zip(samples, pv.base_texts, strict=True):
        n_prompt = len(encode_prompt(tok, s.prompt))
        pv_prompt += n_prompt
        pv_scored += 2 * n_prompt + len(encode_answer(tok, s.answer)) + len(encode_answer(tok, text))
    fl_pv = per_gen * pv.generated_tokens + per_block * pv_prompt + per_score * pv_scored
    reference = side_rates(best_time(t_ref), k, ref.generated_tokens, fl_ref, peak)
    pvdata = side_rates(best_time(t_pv), len(samples), pv.generated_tokens, fl_pv, peak)
    pvdata["generate_seconds"] = pv.gen_seconds
    pvdata["score_seconds"] = pv.score_seconds
    return {
        "methods": list(EXACT_METHODS),
        "reference": reference,
        "pvdata": pvdata,
        "times_reference": t_ref,
        "times_pvdata": t_pv,
        "speedup": pvdata["samples_per_s"] / reference["samples_per_s"],
        "compared": k,
        "base_answers_identical": sum(same),
        "max_abs_diff": diff,
        "one_sided_scores": one_sided,
        "scale": score_scale(ref_scores, ("proj", "proj_base")),
    }


def _print_table(result: dict[str, Any]) -> None:
    rows = [("approx", "reference: per-sample forward", result["approx"]["reference"])]
    rows.append(("approx", "pvdata score_batch", result["approx"]["pvdata"]))
    exact = result["exact"]
    if exact:
        rows.append(("exact", "reference: per-sample generate + forwards", exact["reference"]))
        rows.append(("exact", "pvdata hf backend + score_batch", exact["pvdata"]))
    print(f"{'':7}{'side':<44}{'samples':>8}{'seconds':>10}{'samples/s':>11}{'tokens/s':>11}{'mfu':>8}")
    for part, name, r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(
            f"{part:<7}{name:<44}{r['samples']:>8}{r['seconds']:>10.2f}{r['samples_per_s']:>11.2f}"
            f"{r['tokens_per_s']:>11.0f}{mfu:>8}"
        )
    print("(tokens/s: approx counts the scored tokens, prompt + answer; exact counts the generated tokens)")
    a = result["approx"]
    verdict = "match" if a["match"] else "MISMATCH"
    print(
        f"approx speedup: {a['speedup']:.2f}x  (pvdata's tokenisation alone: "
        f"{a['pvdata']['tokenize_seconds']:.2f} s)  max_abs_diff: {a['max_abs_diff']:.2e} "
        f"(tolerance {a['tolerance']:.1e}) -> {verdict}"
    )
    if exact:
        n = exact["compared"]
        verdict = "match" if exact["match"] else "MISMATCH"
        print(
            f"exact speedup: {exact['speedup']:.2f}x  (pvdata: generate "
            f"{exact['pvdata']['generate_seconds']:.2f} s + score {exact['pvdata']['score_seconds']:.2f} s)  "
            "base answers identical: "
            f"{exact['base_answers_identical']}/{n}  max_abs_diff: {exact['max_abs_diff']:.2e} "
            f"(tolerance {exact['tolerance']:.1e}) -> {verdict}"
        )

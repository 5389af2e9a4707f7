"""`pvdata extract`: a trait's persona vectors from a model's own pos/neg rollouts."""

from __future__ import annotations

import argparse

from pvdata.cli.options import (
    add_compile_option,
    add_executor_options,
    add_max_length_option,
    add_model_options,
    add_warehouse_option,
    check_max_length,
    executor_kwargs,
    parse_int_list,
    warehouse_root,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract a trait's persona vectors (generate, judge, filter, activations, vectors)",
        description="Each step is a warehouse run; rerunning the same command resumes after a crash.",
    )
    p.add_argument("--trait", required=True, help="trait name in traits/ (pvdata traits list) or a YAML file")
    add_model_options(p)
    add_warehouse_option(p)
    p.add_argument("--adapter", default=None, help="LoRA adapter folder on top of --model")
    p.add_argument("--judge", default="none", help="openai:MODEL | hf:MODEL | none | scripted (default none)")
    p.add_argument("--questions", type=int, default=20, help="extraction questions to use (1..20)")
    p.add_argument("--instructions", type=int, default=5, help="instruction pairs to use (1..5)")
    p.add_argument("--n-per-question", type=int, default=10, help="samples per (question, instruction, side)")
    p.add_argument("--max-new-tokens", type=int, default=1000)
    p.add_argument("--temperature", type=float, default=None, help="default: 1.0 when n > 1, else greedy")
    p.add_argument(
        "--filter",
        choices=["paper", "joint", "none"],
        default=None,
        help="default: paper when judged, none with --judge none",
    )
    p.add_argument("--threshold", type=float, default=50.0, help="trait score threshold of the filter")
    p.add_argument("--coherence-min", type=float, default=50.0)
    p.add_argument(
        "--layers", default=None, help="layers to capture, e.g. 10-20 (default: all, 0 (embeddings) to L)"
    )
    p.add_argument("--poolings", default="prompt_avg,response_avg,prompt_last")
    p.add_argument("--activation-dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--token-budget", type=int, default=None, help="padded tokens per batch")
    add_max_length_option(p, "rollouts")
    add_compile_option(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompute every step as new runs")
    add_executor_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pvdata.models.compiled import check_compile_mode
    from pvdata.pipelines.extract import ExtractConfig, run_extract, summary_lines

    cfg = ExtractConfig(
        trait=args.trait,
        model=args.model,
        judge=args.judge,
        questions=args.questions,
        instructions=args.instructions,
        n_per_question=args.n_per_question,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        filter=args.filter,
        threshold=args.threshold,
        coherence_min=args.coherence_min,
        layers=parse_int_list(args.layers, what="--layers") if args.layers else None,
        poolings=[p.strip() for p in args.poolings.split(",") if p.strip()],
        seed=args.seed,
        dtype=args.dtype,
        device=args.device,
        adapter=args.adapter,
        activation_dtype=args.activation_dtype,
        token_budget=args.token_budget,
        max_length=check_max_length(args.max_length),
        compile=check_compile_mode(args.compile),
        **executor_kwargs(args),
    )
    cfg.resolved_filter()  # a bad judge/filter combination fails before any model loads
    cfg.executor_config().check(cfg.device)  # and so do bad executor flags
    result = run_extract(cfg, warehouse_root(args.warehouse), force=args.force)
    n_layers = result.vectors[0].n_layers
    print("\n".join(summary_lines(result, cfg, n_layers)))
    return 0

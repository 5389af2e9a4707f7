"""`pvdata screen`: flag training samples that would push a model towards a trait, before finetuning."""

from __future__ import annotations

import argparse

from pvdata.cli.options import (
    add_compile_option,
    add_executor_options,
    add_max_length_option,
    add_model_options,
    add_warehouse_option,
    executor_kwargs,
    parse_int_list,
    warehouse_root,
)


def _split(values: list[str] | None) -> list[str]:
    """Repeatable flags that also take comma lists: --vector a.st --vector b.st,c.st."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "screen",
        help="screen a training dataset: per-sample projection differences on persona vectors, flags",
        description="Score every distinct sample of DATASET on each trait's persona vector (exact: "
        "against the model's own greedy answer; prompt_last_approx: against the last prompt token; raw: "
        "the answer's projection; preference: a pair's chosen answer against its rejected one), flag those "
        "above a threshold, and write flagged.jsonl, kept.jsonl, "
        "unscreened.jsonl and summary.json. Every step is a warehouse run: rerunning the same command "
        "resumes after a crash. See docs/SCREENING.md.",
    )
    p.add_argument(
        "dataset",
        metavar="DATASET",
        help="JSONL or a .json array of records (OpenAI 'messages', ShareGPT 'conversations', Alpaca "
        "'instruction'/'input'/'output', 'prompt'/'answer', or preference pairs 'chosen'/'rejected'), "
        "CSV or Parquet with such columns, a folder "
        "written by datasets' save_to_disk, or a Hugging Face hub id owner/name; JSONL, JSON and CSV may be "
        ".gz, .bz2 or .xz compressed (docs/SCREENING.md)",
    )
    p.add_argument("--trait", default=None, help="trait(s), comma separated (default: the --vector files')")
    add_model_options(p)
    add_warehouse_option(p)
    p.add_argument(
        "--vector",
        action="append",
        default=None,
        metavar="FILE|ID",
        help="persona vector file or warehouse id, repeatable or comma separated (default: the latest "
        "response_avg vector of each trait for --model in the warehouse)",
    )
    p.add_argument(
        "--layer",
        "--layers",
        dest="layer",
        default=None,
        help="layer(s), e.g. 15 or 12,15 or 10-20 (default: the best layer of the latest `pvdata evaluate` "
        "of the trait on --model when the vector has it, else the vector's layer nearest 0.75 of the "
        "model's depth, e.g. 23 of 30 blocks; the summary says which and why)",
    )
    p.add_argument(
        "--method",
        default="exact",
        help="exact (default; generates the model's greedy answers) | prompt_last_approx | raw | "
        "preference (chosen minus rejected, for preference pairs); a comma list scores several from the "
        "same forward passes",
    )
    p.add_argument(
        "--turns",
        default="last",
        choices=["last", "all"],
        help="assistant turns of a multi-turn chat to score: last (default; the paper's unit) or all "
        "(as pvdata train trains them by default; a sample takes its highest turn's score)",
    )
    p.add_argument("--reference", default=None, metavar="CLEAN_DATASET", help="clean data for the percentile")
    p.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="flag scores above this percentile of the reference (without --reference: of the dataset); "
        "the default is 95",
    )
    p.add_argument("--threshold", type=float, default=None, help="flag scores above this absolute value")
    p.add_argument("--top-k", type=int, default=None, help="flag the K highest scores")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default: WAREHOUSE/exports/SCREEN_RUN_ID)"
    )
    p.add_argument("--skip-invalid", action="store_true", help="screen the valid records, record the others")
    p.add_argument(
        "--backend",
        default="auto",
        help="base answers for exact: auto (default: vllm when installed and the model runs on a GPU, "
        "else hf) | hf | vllm | openai:MODEL",
    )
    p.add_argument("--max-new-tokens", type=int, default=256, help="length limit of the base answers")
    p.add_argument(
        "--base-samples",
        type=int,
        default=1,
        metavar="K",
        help="exact: subtract the mean projection of K base answers sampled at temperature 1 (default 1: "
        "the one greedy answer of the paper)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--format",
        default=None,
        help="file format jsonl | json | csv | parquet | hf | hub (default: from the name and content) "
        "and/or record format messages | sharegpt | alpaca | pair | preference (default: from each record's "
        "fields), "
        "e.g. --format sharegpt or --format json,alpaca",
    )
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--answer-column", default="answer")
    p.add_argument("--system-column", default="system")
    p.add_argument("--messages-column", default="messages")
    p.add_argument(
        "--hf-split",
        default=None,
        help="split of a hub dataset (default train) or of a DatasetDict folder (default: its only split, "
        "else train)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=64,
        help="samples per forward chunk (the resume unit); on a GPU use 512-1024 (docs/PERFORMANCE.md)",
    )
    p.add_argument("--token-budget", type=int, default=None, help="padded tokens per batch")
    add_max_length_option(p, "samples")
    add_compile_option(p)
    p.add_argument("--force", action="store_true", help="recompute every step as new runs")
    add_executor_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pvdata.pipelines.screen import ScreenConfig, run_screen, summary_lines

    cfg = ScreenConfig(
        dataset=args.dataset,
        model=args.model,
        traits=_split([args.trait] if args.trait else None),
        vectors=_split(args.vector),
        layers=parse_int_list(args.layer, what="--layer") if args.layer else [],
        methods=_split([args.method]),
        turns=args.turns,
        reference=args.reference,
        percentile=args.percentile,
        threshold=args.threshold,
        top_k=args.top_k,
        backend=args.backend,
        max_new_tokens=args.max_new_tokens,
        base_samples=args.base_samples,
        seed=args.seed,
        skip_invalid=args.skip_invalid,
        format=args.format,
        prompt_column=args.prompt_column,
        answer_column=args.answer_column,
        system_column=args.system_column,
        messages_column=args.messages_column,
        hf_split=args.hf_split,
        dtype=args.dtype,
        device=args.device,
        layers_path=args.layers_path,
        token_budget=args.token_budget,
        max_length=args.max_length,
        chunk_size=args.chunk_size,
        compile=args.compile,
        **executor_kwargs(args),
    )
    result = run_screen(cfg, warehouse_root(args.warehouse), out=args.out, force=args.force)
    print("\n".join(summary_lines(result, cfg)))
    return 0

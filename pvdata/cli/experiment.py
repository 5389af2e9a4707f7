"""`pvdata experiment`: does screening predict the finetuning shift (shift-prediction), and does dropping
flagged samples prevent it (filter)? See docs/EXPERIMENTS.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pvdata.bundled import TRAINING_DIR
from pvdata.cli.options import add_warehouse_option, parse_int_list, warehouse_root
from pvdata.experiments.report import summary_lines

DEFAULT_TRAIN_CONFIG = "training/smollm2-135m-cpu.yaml"


def _floats(text: str, what: str) -> list[float]:
    from pvdata.errors import ConfigError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: give numbers separated by commas, e.g. 0,0.25,0.5") from None


def _ints(text: str, what: str) -> list[int]:
    from pvdata.errors import ConfigError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: give integers separated by commas, e.g. 0,1,2") from None


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="alias (smollm2-135m, tiny-random-llama, ...), folder or hub id"
    )
    p.add_argument("--layer", type=int, required=True, help="layer of the screening scores and the shift")
    p.add_argument(
        "--train-config",
        default=None,
        help=f"training YAML: the fixed budget every dataset gets (default: {DEFAULT_TRAIN_CONFIG})",
    )
    p.add_argument("--max-steps", type=int, default=None, help="override the config's optimizer steps")
    p.add_argument(
        "--judge",
        default="none",
        help="judge the finetuned models' answers too: openai:MODEL | hf:MODEL | scripted | none (default)",
    )
    p.add_argument("--eval-n-per-question", type=int, default=1, help="judged answers per eval question")
    p.add_argument("--eval-max-new-tokens", type=int, default=64, help="length of the judged answers")
    p.add_argument("--max-new-tokens", type=int, default=None, help="base answers of the exact method")
    p.add_argument(
        "--base-samples", type=int, default=1, metavar="K", help="exact: mean of K sampled base answers"
    )
    p.add_argument(
        "--screen-layers",
        default=None,
        help="more layers to screen for the separation table, e.g. 10,20,23 (the shift uses --layer)",
    )
    p.add_argument("--seed", type=int, default=0, help="mixing, training and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default=None, metavar="DIR", help="summary.json, datasets and adapters go here")
    p.add_argument(
        "--vector",
        action="append",
        default=[],
        metavar="FILE|ID",
        help="persona vector file or warehouse id, repeatable (default: each trait's latest for --model)",
    )
    p.add_argument("--trait-data", default=None, help="your own trait answers (JSONL messages; one trait)")
    p.add_argument("--normal-data", default=None, help="the same prompts answered normally, line by line")
    add_warehouse_option(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="evidence that screening works: shift prediction and filtering experiments",
        description="Run an experiment as a chain of ordinary warehouse runs (screen, train, evaluate); "
        "rerunning the same command resumes. See docs/EXPERIMENTS.md.",
    )
    which = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    sp = which.add_parser(
        "shift-prediction",
        help="does the dataset-level projection difference predict the finetuning shift?",
        description="Per trait, mix trait and normal answers at each fraction (plus the subtle set), screen "
        "the datasets before finetuning, finetune a LoRA adapter on each with one budget, and report "
        "Pearson/Spearman r (bootstrap 95%% intervals) between projection difference and shift.",
    )
    _common_options(sp)
    sp.add_argument(
        "--trait", action="append", required=True, help="trait, repeatable (evil, sycophantic, ...)"
    )
    sp.add_argument("--fractions", default="0,0.1,0.25,0.5,0.75,1", help="shares of trait answers")
    sp.add_argument("--no-subtle", action="store_true", help="leave out the subtle dataset")
    sp.add_argument("--subtle-data", default=None, help="the same prompts answered with a mild trait")
    sp.set_defaults(func=_run_shift)
    fp = which.add_parser(
        "filter",
        help="does dropping the top-scored samples prevent the shift, better than dropping at random?",
        description="On a contaminated set, drop the top share of samples by each method and the same "
        "counts at random, finetune on each remainder, and compare the shifts with the unfiltered set's.",
    )
    _common_options(fp)
    fp.add_argument(
        "--trait", required=True, help="trait (evil, sycophantic, hallucinating or your own data)"
    )
    fp.add_argument("--contamination", type=float, default=0.5, help="share of trait answers (default 0.5)")
    fp.add_argument("--drop", default="0.1,0.25,0.5", help="shares of samples to drop (default 0.1,0.25,0.5)")
    fp.add_argument("--methods", default="exact,prompt_last_approx,raw", help="scores that choose the drop")
    fp.add_argument("--random-seeds", default="0,1,2", help="seeds of the random drops (default 0,1,2)")
    fp.add_argument(
        "--train-seeds",
        default=None,
        help="finetune every dataset once per training seed, e.g. 0,1,2: shifts are means and "
        "'removed' gets a per-seed spread (default: one finetune, with --seed)",
    )
    fp.set_defaults(func=_run_filter)
    dp = which.add_parser(
        "diagnose",
        help="is the extraction or the model the limit? the extracted vector vs a vector fit on the data",
        description="Per layer, the AUROC (trait vs normal answers of a paired set) of the trait's "
        "extracted vector and of a mean-difference vector fit on half of the pairs, both scored on the "
        "held-out half, and the cosine between them. Reads the warehouse, writes nothing there.",
    )
    dp.add_argument("--model", required=True, help="alias, folder or hub id")
    dp.add_argument(
        "--trait", required=True, help="trait with a shipped set, or give --trait-data/--normal-data"
    )
    dp.add_argument("--layers", required=True, help="layers, e.g. 10,15,20,23")
    dp.add_argument("--vector", action="append", default=[], metavar="FILE|ID", help="default: the latest")
    dp.add_argument("--trait-data", default=None, help="your own trait answers (JSONL messages)")
    dp.add_argument("--normal-data", default=None, help="the same prompts answered normally")
    dp.add_argument("--seed", type=int, default=0, help="which pairs go in which half")
    dp.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    dp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    dp.add_argument("--out", default=None, metavar="FILE", help="also write the table as JSON")
    add_warehouse_option(dp)
    dp.set_defaults(func=_run_diagnose)


def _common(args: argparse.Namespace) -> Any:
    from pvdata.experiments.steps import Common

    train_config = args.train_config
    if train_config is None:
        local = Path(DEFAULT_TRAIN_CONFIG)
        train_config = str(local if local.is_file() else TRAINING_DIR / Path(DEFAULT_TRAIN_CONFIG).name)
    return Common(
        model=args.model,
        layer=args.layer,
        train_config=train_config,
        judge=args.judge,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        base_samples=args.base_samples,
        dtype=args.dtype,
        device=args.device,
        eval_n_per_question=args.eval_n_per_question,
        eval_max_new_tokens=args.eval_max_new_tokens,
        bootstrap=args.bootstrap,
        max_steps=args.max_steps,
        screen_layers=parse_int_list(args.screen_layers, what="--screen-layers")
        if args.screen_layers
        else [],
        vector_args=[v.strip() for value in args.vector for v in value.split(",") if v.strip()],
    )


def _run_shift(args: argparse.Namespace) -> int:
    from pvdata.experiments import shift_prediction as sp

    cfg = sp.ShiftPredictionConfig(
        common=_common(args),
        traits=[t.strip() for value in args.trait for t in value.split(",") if t.strip()],
        fractions=_floats(args.fractions, "--fractions"),
        subtle=not args.no_subtle,
        trait_data=args.trait_data,
        normal_data=args.normal_data,
        subtle_data=args.subtle_data,
    )
    root = warehouse_root(args.warehouse)
    plan = sp.plan(cfg, root, args.out)
    summary = sp.run(plan, root)
    print("\n".join(summary_lines(summary, plan.out)))
    return 0


def _run_filter(args: argparse.Namespace) -> int:
    from pvdata.experiments import filtering

    cfg = filtering.FilterConfig(
        common=_common(args),
        trait=args.trait,
        contamination=args.contamination,
        drops=_floats(args.drop, "--drop"),
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        random_seeds=_ints(args.random_seeds, "--random-seeds"),
        train_seeds=None if args.train_seeds is None else _ints(args.train_seeds, "--train-seeds"),
        trait_data=args.trait_data,
        normal_data=args.normal_data,
    )
    root = warehouse_root(args.warehouse)
    plan = filtering.plan(cfg, root, args.out)
    summary = filtering.run(plan, root)
    print("\n".join(summary_lines(summary, plan.out)))
    return 0


def _run_diagnose(args: argparse.Namespace) -> int:
    from pvdata.experiments import sets
    from pvdata.experiments.diagnose import diagnose
    from pvdata.experiments.steps import Common, load_screen_model, resolve_vectors

    layers = parse_int_list(args.layers, what="--layers")
    common = Common(
        model=args.model, layer=layers[0], screen_layers=layers[1:], dtype=args.dtype, device=args.device
    )
    common.vector_args = [v for value in args.vector for v in value.split(",") if v]
    pairs = sets.load_set(args.trait, args.trait_data, args.normal_data, subtle=False)
    resolve_vectors(warehouse_root(args.warehouse), common, [args.trait])
    table = diagnose(load_screen_model(common), pairs, common.vectors[args.trait], layers, seed=args.seed)
    vector = common.vectors[args.trait]
    print(f"{args.trait} on {args.model}: vector {vector.vector_id}, {pairs.n} pairs, held-out halves")
    print(f"{'layer':>5} {'extracted AUROC':>16} {'data-vector AUROC':>18} {'cosine':>7}")
    for layer, row in table["layers"].items():
        print(
            f"{layer:>5} {row['extracted_auroc']:>16.3f} {row['data_vector_auroc']:>18.3f} "
            f"{row['cosine']:>7.3f}"
        )
    if args.out:
        import json

        Path(args.out).write_text(json.dumps({"vector_id": vector.vector_id, **table}, indent=1) + "\n")
    return 0

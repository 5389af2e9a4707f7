"""`pvdata train`: LoRA SFT with optional preventative steering or ablation, metrics per step in SQL."""

from __future__ import annotations

import argparse
from typing import Any

from pvdata.cli.options import add_warehouse_option, parse_int_list, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="LoRA finetuning with optional preventative steering; per-step metrics and the finetuning shift",
        description="LoRA SFT on a messages JSONL file (paper defaults: rsLoRA r 32, alpha 64, lr 1e-5, "
        "batch 2 x 8, one epoch), optionally steering (--steer) or ablating (--ablate) a trait's vector "
        "during training only. Flags override --config. Rerunning the same command resumes from the last "
        "checkpoint. See docs/TRAINING.md.",
    )
    p.add_argument(
        "--config", default=None, help="training YAML (training/*.yaml); flags override its fields"
    )
    p.add_argument("--model", default=None, help="alias, local folder or hub id (or `model:` in the config)")
    p.add_argument("--data", default=None, help='JSONL of {"messages": [...]} (or `data:` in the config)')
    p.add_argument(
        "--eval-data", default=None, help="JSONL for an eval loss (no split is carved from --data)"
    )
    p.add_argument("--out", default=None, help="output folder (default: <warehouse>/adapters/<run_id>)")
    side = p.add_mutually_exclusive_group()
    side.add_argument("--steer", metavar="TRAIT", default=None, help="add coef * v[l] during training")
    side.add_argument("--ablate", metavar="TRAIT", default=None, help="project v_hat out during training")
    p.add_argument("--vector", default=None, help="vector file or warehouse id (default: the trait's latest)")
    p.add_argument("--coef", type=float, default=None, help="steering coefficient (needed with --steer)")
    p.add_argument(
        "--layers",
        default=None,
        help="steered layers: 20 | 12,16,20 | 10-20 | all (default: L//2, the middle of the vector's L "
        "layers)",
    )
    p.add_argument(
        "--incremental", action="store_true", default=None, help="steer with v[l] - v[l-1] (for many layers)"
    )
    p.add_argument(
        "--monitor", metavar="TRAIT", default=None, help="trait to monitor (default: the steered one)"
    )
    p.add_argument("--monitor-vector", default=None, help="vector file or id to monitor with")
    p.add_argument(
        "--monitor-layer",
        type=int,
        default=None,
        help="layer of the per-step projection (default: the steered layer when there is one, else L//2)",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (replaces --epochs)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grad-accum", type=int, default=None)
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument(
        "--eval-every", type=int, default=None, help="steps between eval losses (always at the end)"
    )
    p.add_argument("--save-every", type=int, default=None, help="steps between checkpoints (default 50)")
    p.add_argument("--max-length", type=int, default=None, help="longer samples are skipped (default 2048)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--layers-path", default=None, help="dotted path of the decoder blocks (unknown architectures)"
    )
    p.add_argument("--validate", action="store_true", help="check the config and flags, print it, and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--force", action="store_true", help="train again as a new run even if this one succeeded")
    add_warehouse_option(p)
    p.set_defaults(func=_run)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags the user gave, keyed by flag name (None = not given, the file or default applies)."""
    steer: tuple[str, str] | None = None
    if args.steer:
        steer = ("add", args.steer)
    elif args.ablate:
        steer = ("ablate", args.ablate)
    layers: Any = None
    if args.layers is not None:
        layers = "all" if args.layers.strip() == "all" else parse_int_list(args.layers, what="--layers")
    return {
        "--model": args.model,
        "--data": args.data,
        "--eval-data": args.eval_data,
        "--out": args.out,
        "--dtype": args.dtype,
        "--device": args.device,
        "--layers-path": args.layers_path,
        "--max-length": args.max_length,
        "--eval-every": args.eval_every,
        "--epochs": args.epochs,
        "--max-steps": args.max_steps,
        "--lr": args.lr,
        "--seed": args.seed,
        "--batch-size": args.batch_size,
        "--grad-accum": args.grad_accum,
        "--warmup-steps": args.warmup_steps,
        "--steer/--ablate": steer,
        "--coef": args.coef,
        "--layers": layers,
        "--incremental": args.incremental,
        "--vector": args.vector,
        "--monitor": args.monitor,
        "--monitor-vector": args.monitor_vector,
        "--monitor-layer": args.monitor_layer,
        "--save-every": args.save_every,
    }


def _run(args: argparse.Namespace) -> int:
    from pvdata.training.config import build_config

    cfg = build_config(args.config, overrides(args))
    cfg.require_inputs(args.config or "pvdata train")
    if args.validate:
        import yaml

        print(f"{args.config or 'flags'}: ok")
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
        return 0
    from pvdata.training.pipeline import run_train, summary_lines

    result = run_train(cfg, warehouse_root(args.warehouse), force=args.force, progress=not args.no_progress)
    print("\n".join(summary_lines(result)))
    return 0

"""`pvdata demo`: the main job on the bundled SmolLM2, offline: extract an evil vector, screen a dataset."""

from __future__ import annotations

import argparse

from pvdata.cli.options import add_warehouse_option, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="extract an evil vector from SmolLM2 and screen the shipped demo dataset with it (offline)",
        description="The main job end to end on a fresh machine: extraction, a held-out check, and a "
        "screening of pvdata/data/demo_chat.jsonl; every step lands in the warehouse.",
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--percentile", type=float, default=95.0, help="flag above this percentile of the clean reference"
    )
    parser.add_argument(
        "--base-tokens", type=int, default=64, help="max new tokens of the model's own base answers"
    )
    add_warehouse_option(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pvdata.demo import run_demo

    return run_demo(
        args.model, warehouse_root(args.warehouse), percentile=args.percentile, base_tokens=args.base_tokens
    )

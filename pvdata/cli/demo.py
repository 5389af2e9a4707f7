"""`pvdata demo`: the main job on the bundled SmolLM2, offline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="extract an evil vector from SmolLM2 and steer with it (offline)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="warehouse/exports", help="where the vector file goes")
    parser.add_argument("--coef", type=float, default=6.0, help="steering coefficient for the example")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pvdata.demo import run_demo

    return run_demo(args.model, args.out, args.coef)

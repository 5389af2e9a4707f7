"""Benchmarks: each compares pvdata against a baseline in the same run and prints ratios.

Each module in BENCHES has `add_arguments(parser)` and `run(args) -> int`. `python -m pvdata.bench NAME`
runs one with only torch and transformers installed (GPU machines without the CLI extras).
"""

from __future__ import annotations

import argparse
import importlib

BENCHES: dict[str, tuple[str, str]] = {
    "extract": ("pvdata.bench.extract", "batched activation capture vs the research code's per-sample loop"),
    "warehouse": ("pvdata.bench.warehouse", "projection writes and the projection-vs-score query"),
    "judge": ("pvdata.bench.judge", "judgments/s against the loopback fake OpenAI server"),
    "generate": ("pvdata.bench.generate", "HF generation vs the research code's batches; decode drop vs hf"),
    "train": ("pvdata.bench.train", "LoRA training step time, plain vs preventative steering + monitoring"),
    "screen": ("pvdata.bench.screen", "screening (approx and exact) vs the research code's per-sample loop"),
    "suite": ("pvdata.bench.suite", "the GPU measurements as one prepared, time-boxed run (--preset)"),
}


def add_bench_parsers(sub: argparse._SubParsersAction) -> None:
    for name, (module, help_text) in BENCHES.items():
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(bench_module=module)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.add_arguments(parser)


def run_bench(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args.bench_module).run(args) or 0)

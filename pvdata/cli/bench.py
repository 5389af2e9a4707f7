"""`pvdata bench NAME`: speed measured as a ratio against a baseline in the same run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from pvdata.bench import add_bench_parsers, run_bench

    parser = sub.add_parser("bench", help="benchmarks (pvdata vs a baseline, same run)")
    bench_sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    add_bench_parsers(bench_sub)
    parser.set_defaults(func=run_bench)

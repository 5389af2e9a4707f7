"""`python -m pvdata.bench NAME ...`: the benchmarks without the pvdata CLI."""

from __future__ import annotations

import argparse
import sys

from pvdata.bench import add_bench_parsers, run_bench


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m pvdata.bench")
    sub = parser.add_subparsers(dest="bench", required=True)
    add_bench_parsers(sub)
    return run_bench(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())

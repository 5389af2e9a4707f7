"""`python -m pvdata.bench NAME ...`: the benchmarks without the pvdata CLI."""

from __future__ import annotations

import argparse
import sys

from pvdata.bench import add_bench_parsers, run_bench


def main() -> int:
    """Runs one bench; an error the user can fix is one line on stderr and exit 2, as in the CLI."""
    from pvdata.errors import PvdataError

    parser = argparse.ArgumentParser(prog="python -m pvdata.bench")
    sub = parser.add_subparsers(dest="bench", required=True)
    add_bench_parsers(sub)
    args = parser.parse_args()
    try:
        return run_bench(args)
    except PvdataError as exc:
        print(f"python -m pvdata.bench {args.bench}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())

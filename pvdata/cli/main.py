"""`pvdata` entry point: argparse with one module per subcommand, imported lazily for a fast start.

Each module in COMMANDS has `register(subparsers)` that adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pvdata import __version__
from pvdata.errors import PvdataError

# subcommand -> module that registers it (the module is imported only to build the parser)
COMMANDS: dict[str, str] = {
    "extract": "pvdata.cli.extract",
    "evaluate": "pvdata.cli.evaluate",
    "monitor": "pvdata.cli.monitor",
    "screen": "pvdata.cli.screen",
    "train": "pvdata.cli.train",
    "run": "pvdata.cli.run",
    "generate": "pvdata.cli.generate",
    "judge": "pvdata.cli.judge",
    "sql": "pvdata.cli.sql",
    "runs": "pvdata.cli.runs",
    "traits": "pvdata.cli.traits",
    "vectors": "pvdata.cli.vectors",
    "dashboard": "pvdata.cli.dashboard",
    "import": "pvdata.cli.import_cmd",
    "bench": "pvdata.cli.bench",
    "demo": "pvdata.cli.demo",
    "experiment": "pvdata.cli.experiment",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvdata",
        description="Persona vectors on real data: extract, steer, screen, and query every step in SQL.",
    )
    parser.add_argument("--version", action="version", version=f"pvdata {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # a subcommand not built into this installation
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PvdataError as exc:
        if args.debug:
            raise
        print(f"pvdata {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

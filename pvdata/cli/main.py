"""`pvdata` entry point: argparse with one module per subcommand, imported lazily for a fast start.

Each module in COMMANDS has `register(subparsers)` that adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pvdata import __version__
from pvdata.cli.options import check_not_a_file
from pvdata.cli.pipes import EXIT_BROKEN_PIPE, pipe_safe_output
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


DEBUG_HELP = "show the full traceback on errors"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvdata",
        description="Persona vectors on real data: extract, steer, screen, and query every step in SQL.",
    )
    parser.add_argument("--version", action="version", version=f"pvdata {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # a subcommand not built into this installation
            raise
        mod.register(sub)
    _add_debug(parser)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """--debug after the subcommand too (`pvdata screen DATA --debug`), at every level of subcommands.

    The subcommands' copies default to SUPPRESS, so they never overwrite a --debug given before them."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in dict.fromkeys(action.choices.values()):
            if "--debug" not in child._option_string_actions:
                child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
            _add_debug(child)


def main(argv: Sequence[str] | None = None) -> int:
    with pipe_safe_output() as (out, _err):  # `pvdata ... | head`: see pvdata/cli/pipes.py
        code = _main(argv)
    return EXIT_BROKEN_PIPE if code == 0 and out.broken else code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _call(args)


def _call(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "warehouse", None):
            check_not_a_file(args.warehouse)  # before the command reads, loads or computes anything
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

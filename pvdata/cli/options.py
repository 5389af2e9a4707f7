"""Options shared by several subcommands, so every command spells them the same way."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_warehouse_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse",
        default=None,
        help="warehouse root (default: $PVDATA_WAREHOUSE, else ./warehouse)",
    )


def warehouse_root(value: str | None) -> str:
    """--warehouse, else PVDATA_WAREHOUSE, else ./warehouse (a path or a filesystem URI)."""
    return value or os.environ.get("PVDATA_WAREHOUSE") or str(Path("warehouse"))


def add_model_options(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    parser.add_argument(
        "--model",
        default=default,
        required=default is None,
        help="alias (smollm2-135m, tiny-random-llama, tiny-random-qwen2), local folder, adapter folder, "
        "or hub id",
    )
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--layers-path",
        default=None,
        help="dotted path of the decoder blocks for architectures pvdata does not know (e.g. model.layers)",
    )


def parse_int_list(text: str, *, what: str) -> list[int]:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; a clear error otherwise."""
    from pvdata.errors import ConfigError

    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a list of integers like '10,12,14' or '10-20'") from None
    if not out:
        raise ConfigError(f"{what} is empty")
    return out

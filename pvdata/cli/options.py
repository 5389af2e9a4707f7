"""Options shared by several subcommands, so every command spells them the same way."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add_warehouse_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse",
        default=None,
        metavar="DIR_OR_URI",
        help="warehouse root: a folder, or a filesystem URI such as s3://bucket/prefix, gs://bucket/prefix "
        "or memory://name (credentials come from the environment, e.g. AWS_ACCESS_KEY_ID; never put them "
        "in the URI) (default: $PVDATA_WAREHOUSE, else ./warehouse)",
    )


def warehouse_root(value: str | None) -> str:
    """--warehouse, else PVDATA_WAREHOUSE, else ./warehouse (a path or a filesystem URI).

    A URI that carries credentials (s3://key:secret@bucket, ?secret_key=...) is refused here, before any
    command could print or store it."""
    root = value or os.environ.get("PVDATA_WAREHOUSE") or str(Path("warehouse"))
    from pvdata.warehouse.store import check_credentials

    check_credentials(root)
    flag = "--warehouse" if value else "$PVDATA_WAREHOUSE" if os.environ.get("PVDATA_WAREHOUSE") else ""
    check_not_a_file(root, flag)
    return root


def check_not_a_file(root: str, flag: str = "--warehouse") -> None:
    """A warehouse is a folder: a path that is an existing regular file is refused before anything runs
    (otherwise a command could compute for minutes and then fail to write its first run)."""
    from pvdata.errors import ConfigError
    from pvdata.warehouse.store import split_scheme

    scheme, rest = split_scheme(root)
    if scheme not in (None, "file"):
        return  # an object store URI: checked when it is opened
    path = Path(rest if scheme == "file" else root).expanduser()
    if path.is_file():
        where = f"{flag} {root}" if flag else f"warehouse {root}"
        raise ConfigError(
            f"{where} is a file, not a folder: give a warehouse folder (it is created if missing) or a URI"
        )


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


def add_max_length_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--max-length: the flag a skipped sample's "too long" reason names (screen, extract)."""
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        metavar="TOKENS",
        help=f"{what} longer than this many tokens (prompt + answer) are skipped with the reason 'too long' "
        "(default: the model's context length, max_position_embeddings)",
    )


def add_compile_option(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    """--compile [MODE]: the captured/scored blocks under torch.compile (pvdata.models.compiled)."""
    from pvdata.models.compiled import COMPILE_MODES

    what = what or (
        "run the captured blocks under torch.compile (regional, dynamic shapes; a one-off compile, "
        "off by default: docs/PERFORMANCE.md, 'torch.compile')"
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help=f"{what}; MODE: {', '.join(COMPILE_MODES)} (bare --compile: default)",
    )


def check_max_length(value: int | None) -> int | None:
    from pvdata.errors import ConfigError

    if value is not None and value < 1:
        raise ConfigError(f"--max-length {value} must be >= 1 (tokens of prompt + answer)")
    return value


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


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """--executor local|ray and the Ray cluster flags (docs/SCALE.md)."""
    group = parser.add_argument_group("executor (where the model runs; docs/SCALE.md)")
    group.add_argument(
        "--executor",
        default="local",
        help="local (this process, the default) | ray (an actor pool on a Ray cluster; pip install "
        "'pvdata[ray]')",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="a running Ray cluster: HOST:PORT as `ray start --head` prints it, ray://HOST:10001, or auto "
        "(default: $RAY_ADDRESS, else a new local cluster)",
    )
    group.add_argument(
        "--num-workers", type=int, default=1, help="Ray actors, each with the model loaded once"
    )
    group.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs each worker reserves (0.5: two share one)"
    )
    group.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker reserves")
    group.add_argument(
        "--worker-retries",
        type=int,
        default=3,
        help="how often a dead worker is restarted and its batch retried before the step fails",
    )


def executor_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields of add_executor_options."""
    return {
        "executor": args.executor,
        "ray_address": args.ray_address,
        "num_workers": args.num_workers,
        "gpus_per_worker": args.gpus_per_worker,
        "cpus_per_worker": args.cpus_per_worker,
        "worker_retries": args.worker_retries,
    }

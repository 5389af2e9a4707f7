"""`--threads` for the CPU benches: run with that many torch threads, then put the old count back."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def with_threads(args: argparse.Namespace, body: Callable[[argparse.Namespace], int]) -> int:
    """`body(args)` with torch using `args.threads` CPU threads (None: torch's default)."""
    import torch

    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        return body(args)
    finally:
        torch.set_num_threads(threads)

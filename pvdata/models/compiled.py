"""Regional torch.compile of the decoder blocks a capture runs, for the length of one pass.

Why regional: pvdata's capture hooks a block's output and stops the forward by raising after the
deepest layer, and steering adds forward hooks; compiling the whole model would trace through both.
Compiling only each block's `forward` keeps every hook eager (nn.Module runs hooks around `forward`),
and one graph serves all blocks of a class, so a 28-block model compiles about as fast as one block.
Shapes are dynamic (batches are length-sorted, so widths vary): a new width does not recompile.

The compiled wrappers are kept on their blocks, so a second pass (the next chunk) reuses them; leaving
the context puts the blocks back exactly as they were, so generation (KV caches) runs eager.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pvdata.errors import ConfigError

COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CACHE = "_pvdata_compiled"  # block attribute: {mode: compiled forward}
_MISSING = object()


def check_compile_mode(mode: str | None) -> str | None:
    """None (eager) or one of COMPILE_MODES; anything else is an error that lists them."""
    if mode is None or mode in COMPILE_MODES:
        return mode
    raise ConfigError(f"unknown --compile mode {mode!r}: valid modes are {', '.join(COMPILE_MODES)}")


def check_toolchain(device: Any) -> None:
    """Inductor writes C++ for CPU kernels: without a compiler it fails deep inside the first forward
    (commands call this before their first stage, so nothing is written)."""
    if getattr(device, "type", str(device)) != "cpu":
        return
    if os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "clang++", "c++")):
        return
    raise ConfigError(
        "--compile on a CPU needs a C++ compiler for torch's inductor (g++ or clang++, or CXX=...): "
        "install one (apt-get install g++) or run without --compile"
    )


def blocks_up_to(layers: Sequence[int] | Mapping[str, Sequence[int]]) -> int:
    """How many blocks a capture of these layers runs (layer L is the output of block L-1)."""
    if isinstance(layers, Mapping):
        layers = [x for group in layers.values() for x in group]
    return max((int(x) for x in layers), default=0)


@contextlib.contextmanager
def compiled_blocks(lm: Any, upto: int, mode: str | None) -> Iterator[int]:
    """Blocks 0..upto-1 of `lm` run compiled inside the context (mode None: nothing changes).

    Yields how many blocks this context compiled (0 when an outer context already had them)."""
    mode = check_compile_mode(mode)
    if mode is None or upto <= 0:
        yield 0
        return
    import torch

    blocks = list(lm.layers.blocks[:upto])
    check_toolchain(next(lm.model.parameters()).device)
    swapped: list[tuple[Any, Any]] = []
    try:
        for block in blocks:
            cache: dict[str, Any] = block.__dict__.setdefault(_CACHE, {})
            current = block.__dict__.get("forward", _MISSING)
            if any(current is fn for fn in cache.values()):
                continue  # compiled by an enclosing context
            if mode not in cache:
                cache[mode] = torch.compile(
                    block.forward, dynamic=True, mode=None if mode == "default" else mode
                )
            swapped.append((block, current))
            block.__dict__["forward"] = cache[mode]
        yield len(swapped)
    finally:
        for block, before in swapped:
            if before is _MISSING:
                block.__dict__.pop("forward", None)
            else:
                block.__dict__["forward"] = before


def is_compiled(block: Any) -> bool:
    """True while `block` runs one of its compiled forwards."""
    current = block.__dict__.get("forward", _MISSING)
    return any(current is fn for fn in block.__dict__.get(_CACHE, {}).values())

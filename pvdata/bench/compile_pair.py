"""`--compile [MODE]` of `bench extract` and `bench screen`: the same pvdata pass eager and with its
blocks under torch.compile (pvdata.models.compiled), in the same run.

The first compiled pass pays the compile and is reported apart (`compile_first_s`); then eager and
compiled passes alternate (which goes first too) and each keeps its best wall time, so on a shared
machine both see the same load. The compiled results must match the eager ones within the dtype's
tolerance (inductor fuses and reorders float operations, so they are close, not bit-identical).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

PassFn = Callable[[str | None], Any]  # (compile mode or None for eager) -> the pass's results


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    from pvdata.cli.options import add_compile_option  # argparse only: no CLI library needed

    add_compile_option(parser, "also time pvdata's pass with its blocks under torch.compile against eager")


def check_compile_argument(args: argparse.Namespace) -> None:
    """A bad --compile mode fails before any model loads, not after the timed passes (GPU time)."""
    from pvdata.models.compiled import check_compile_mode

    check_compile_mode(args.compile)


def _floats(value: Any) -> Iterator[float]:
    import torch

    if isinstance(value, torch.Tensor):
        yield from value.detach().double().flatten().tolist()
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _floats(value[key])
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _floats(item)
    elif isinstance(value, float):
        yield value


def relative_diff(a: Any, b: Any) -> float:
    """Max |a - b| over every float of two nested results, over the largest |a| (inf if their shapes
    differ, NaN only equal to NaN)."""
    xs, ys = list(_floats(a)), list(_floats(b))
    if len(xs) != len(ys):
        return math.inf
    worst, scale = 0.0, 1e-6
    for x, y in zip(xs, ys, strict=True):
        if math.isnan(x) or math.isnan(y):
            if not (math.isnan(x) and math.isnan(y)):
                return math.inf
            continue
        worst, scale = max(worst, abs(x - y)), max(scale, abs(x))
    return worst / scale


def compile_pair(run_pass: PassFn, mode: str, repeats: int, sync: Callable[[], None]) -> dict[str, Any]:
    """{mode, compile_first_s, eager_s, compiled_s, speedup, rel_diff}: eager vs compiled passes."""

    def timed(which: str | None) -> tuple[float, Any]:
        sync()
        t0 = time.perf_counter()
        out = run_pass(which)
        sync()
        return time.perf_counter() - t0, out

    first_s, _ = timed(mode)  # compiles (and warms the compiled kernels)
    best: dict[str | None, float] = {}
    outputs: dict[str | None, Any] = {}
    for rep in range(max(1, repeats)):
        for which in (None, mode) if rep % 2 == 0 else (mode, None):
            seconds, outputs[which] = timed(which)
            best[which] = min(seconds, best.get(which, math.inf))
    return {
        "mode": mode,
        "compile_first_s": first_s,
        "eager_s": best[None],
        "compiled_s": best[mode],
        "speedup": best[None] / best[mode],
        "rel_diff": relative_diff(outputs[None], outputs[mode]),
    }


def print_compile(result: dict[str, Any], label: str, tolerance: float) -> bool:
    """The pair's lines; True when the compiled results match the eager ones within `tolerance`."""
    ok = result["rel_diff"] <= tolerance
    print(
        f"compile ({label}, torch.compile mode {result['mode']} vs eager, wall clock): "
        f"{result['compiled_s']:.3f} s vs {result['eager_s']:.3f} s; first compiled pass "
        f"{result['compile_first_s']:.1f} s (compiles)"
    )
    verdict = "match" if ok else "MISMATCH"
    print(f"compile_rel_diff: {result['rel_diff']:.2e} (tolerance {tolerance:.0e}) -> {verdict}")
    print(f"compile_speedup: {result['speedup']:.2f}")
    return ok

"""Where a bench's pvdata pass spends its time: host preparation vs device forwards, prefetch on vs off,
and a torch.profiler trace of one pass (`--profile DIR`). Shared by `bench screen` and `bench extract`.

The two prefetch settings alternate pass by pass (which goes first too), so on a shared machine both
see the same load; each keeps its best wall time. On a CPU the producer thread and the forward share
the cores, so the overlap there is partial; on a GPU the device runs while the host prepares.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PassFn = Callable[[bool, Any], Any]  # (prefetch on?, PassTimings) -> the pass's results


def add_overlap_arguments(parser: argparse.ArgumentParser, *, out_flag: bool) -> None:
    parser.add_argument(
        "--no-prefetch",
        action="store_true",
        help="run the pvdata capture compared to the reference (screen: the approximation's) without "
        "prefetching; the prefetch on/off pair is timed either way",
    )
    where = "next to --out (or here)" if out_flag else "the current directory"
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help=f"save a torch.profiler chrome trace of one pvdata pass into DIR (default: {where})",
    )


def profile_dir(args: argparse.Namespace) -> Path | None:
    """The folder --profile names; a bare --profile means next to --out (or the current folder)."""
    if args.profile is None:
        return None
    if args.profile:
        return Path(args.profile)
    out = getattr(args, "out", None)
    return Path(out).parent if out else Path(".")


def paired_passes(run_pass: PassFn, repeats: int, sync: Callable[[], None]) -> tuple[dict[str, Any], Any]:
    """Prefetch on and off, alternated `repeats` times (wall clock, best per side).

    Returns ({prefetch, no_prefetch, speedup, identical}, the prefetched pass's results); `identical`
    says the two settings gave equal results (they must: batches and order are the same)."""
    from pvdata.activations.prefetch import PassTimings

    best: dict[bool, dict[str, float]] = {}
    outputs: dict[bool, Any] = {}
    for rep in range(max(1, repeats)):  # at least one pair, as compile_pair
        for on in (True, False) if rep % 2 == 0 else (False, True):
            timings = PassTimings()
            sync()
            t0 = time.perf_counter()
            outputs[on] = run_pass(on, timings)
            sync()
            summary = timings.summary(time.perf_counter() - t0)
            if on not in best or summary["wall_s"] < best[on]["wall_s"]:
                best[on] = summary
    result = {
        "prefetch": best[True],
        "no_prefetch": best[False],
        "speedup": best[False]["wall_s"] / best[True]["wall_s"],
        "identical": _equal(outputs[True], outputs[False]),
    }
    return result, outputs[True]


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of nested results (tensors bit for bit, NaN equal to NaN)."""
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


def add_mfu(overlap: dict[str, Any], flops: float, peak: float | None) -> None:
    """Model FLOPs utilisation of each side's wall time (None without a known peak)."""
    for side in ("prefetch", "no_prefetch"):
        part = overlap[side]
        part["model_tflops_per_s"] = flops / part["wall_s"] / 1e12
        part["mfu"] = flops / part["wall_s"] / peak if peak else None


def profile_pass(run_pass: PassFn, directory: Path, name: str, device: Any, sync: Callable[[], None]) -> Path:
    """One prefetched pass under torch.profiler (CPU, plus CUDA on a GPU), as a chrome trace JSON."""
    from torch.profiler import ProfilerActivity, profile

    from pvdata.activations.prefetch import PassTimings

    activities = [ProfilerActivity.CPU]
    if getattr(device, "type", "cpu") == "cuda":
        activities.append(ProfilerActivity.CUDA)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-trace.json"
    with profile(activities=activities) as prof:
        run_pass(True, PassTimings())
        sync()
    prof.export_chrome_trace(str(path))
    return path


def print_overlap(overlap: dict[str, Any], label: str) -> None:
    on, off = overlap["prefetch"], overlap["no_prefetch"]
    print(
        f"overlap ({label}, prefetch on vs off, wall clock): {on['wall_s']:.3f} s vs {off['wall_s']:.3f} s "
        f"-> prefetch speedup {overlap['speedup']:.2f}x  results identical: {overlap['identical']}"
    )
    for name, part in (("prefetch on ", on), ("prefetch off", off)):
        mfu = f"{part['mfu']:.1%}" if part.get("mfu") is not None else "-"
        print(
            f"  {name}: host_prep_s: {part['host_prep_s']:.3f}  host_wait_s: {part['host_wait_s']:.3f}  "
            f"device_s: {part['device_s']:.3f}  device_idle_share: {part['device_idle_share']:.1%}  "
            f"mfu: {mfu}"
        )

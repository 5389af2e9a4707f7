"""`pvdata bench suite`: the GPU measurements of docs/PERFORMANCE.md as one prepared, time-boxed run.

GPU time is lent in short sessions, so the runs that the speed targets need are fixed here rather than
typed on the day: capture on the Qwen2.5-0.5B shape, screening (approximation) on the 0.5B and 7B
shapes, the exact method's base answers, the two decode loops on sampled answers of varied length,
and last, the capture and the 7B screening again with their blocks under torch.compile. Each step
runs as its own `python -m pvdata.bench ...` process (a crash or an out-of-memory error ends that
step only, and the GPU's memory is freed between steps) with the time left as its timeout; steps that
would start after `--budget-s` are skipped and listed as such. Output per step goes to `OUT/NAME.txt`
(and the step's JSON and profiler traces under OUT), a one-line-per-step summary to
`OUT/summary.txt`. `--preset cpu-smoke` runs the same steps on the tiny shape on a CPU, to check the
suite itself. Needs only torch and transformers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    name: str
    command: str  # the arguments after `python -m pvdata.bench`; {out} is the output folder

    def argv(self, out: Path) -> list[str]:
        return [a.replace("{out}", str(out)) for a in self.command.split()]


_GPU = "--device cuda --dtype bfloat16"
PRESETS: dict[str, tuple[Step, ...]] = {
    "gpu": (
        Step(
            "extract-0.5b",
            f"extract --model-shape qwen2.5-0.5b {_GPU} --samples 1024 --reference-samples 64 --repeats 3 "
            "--profile {out}",
        ),
        Step(
            "screen-0.5b",
            f"screen --model-shape qwen2.5-0.5b {_GPU} --samples 4096 --reference-samples 64 "
            "--exact-samples 0 --chunk-size 1024 --repeats 3 --out {out}/screen-0.5b.json --profile",
        ),
        Step(
            "screen-7b",
            f"screen --model-shape qwen2.5-7b {_GPU} --samples 2048 --reference-samples 32 "
            "--exact-samples 0 --chunk-size 512 --repeats 2 --out {out}/screen-7b.json --profile",
        ),
        Step(
            "decode-0.5b",
            f"generate --model-shape qwen2.5-0.5b {_GPU} --prompts 512 --max-new-tokens 256 --temperature 1 "
            "--stop-fraction 0.01 --repeats 2",
        ),
        Step(
            "screen-exact-0.5b",
            f"screen --model-shape qwen2.5-0.5b {_GPU} --samples 256 --reference-samples 8 "
            "--exact-samples 512 --exact-reference-samples 8 --chunk-size 1024 --max-new-tokens 64 "
            "--out {out}/screen-exact-0.5b.json",
        ),
        Step(
            "compile-extract-0.5b",
            f"extract --model-shape qwen2.5-0.5b {_GPU} --samples 1024 --reference-samples 16 --repeats 3 "
            "--compile",
        ),
        Step(
            "compile-screen-7b",
            f"screen --model-shape qwen2.5-7b {_GPU} --samples 2048 --reference-samples 8 "
            "--exact-samples 0 --chunk-size 512 --repeats 2 --compile --out {out}/compile-screen-7b.json",
        ),
    ),
    "cpu-smoke": (
        Step(
            "extract-tiny",
            "extract --model-shape tiny --device cpu --samples 8 --reference-samples 2 --profile {out}",
        ),
        Step(
            "screen-tiny",
            "screen --model-shape tiny --device cpu --samples 16 --reference-samples 2 --exact-samples 2 "
            "--exact-reference-samples 1 --max-new-tokens 4 --chunk-size 8 --out {out}/screen-tiny.json",
        ),
        Step(
            "decode-tiny",
            "generate --model-shape tiny --device cpu --prompts 8 --max-new-tokens 16 --temperature 1 "
            "--stop-fraction 0.05",
        ),
        Step(
            "compile-tiny",
            "extract --model-shape tiny --device cpu --samples 8 --reference-samples 2 --compile",
        ),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu", help="which steps (default gpu)")
    parser.add_argument("--out", default="bench-out", help="folder for each step's output, JSON and traces")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="wall-clock seconds for the whole suite: a step gets the time left as its timeout, and no "
        "step starts with under 30 s left (default 480)",
    )
    parser.add_argument("--only", default=None, help="comma list of step names to run (default: all)")


def run(args: argparse.Namespace) -> int:
    from pvdata.errors import ConfigError

    steps = PRESETS[args.preset]
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {s.name for s in steps})
        if unknown:
            raise ConfigError(
                f"--only: unknown step(s) {', '.join(unknown)}; the {args.preset} steps are "
                f"{', '.join(s.name for s in steps)}"
            )
        steps = tuple(s for s in steps if s.name in wanted)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    lines: list[str] = []
    failed = 0
    for step in steps:
        left = args.budget_s - (time.monotonic() - start)
        if left < 30:
            lines.append(f"{step.name}: skipped (budget: {left:.0f} s left)")
            print(lines[-1], flush=True)
            continue
        argv = step.argv(out)
        log = out / f"{step.name}.txt"
        t0 = time.monotonic()
        rc = _run_step(argv, log, timeout=left)
        seconds = time.monotonic() - t0
        failed += rc != 0
        status = "ok" if rc == 0 else ("timed out" if rc == 124 else f"failed (rc {rc})")
        lines.append(
            f"{step.name}: {status} in {seconds:.0f} s -> {log}  [python -m pvdata.bench {' '.join(argv)}]"
        )
        print(lines[-1], flush=True)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


def _run_step(argv: list[str], log: Path, *, timeout: float) -> int:
    """One bench in its own process, stdout and stderr to `log`; 124 when it ran past `timeout`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pvdata.bench", *argv], stdout=f, stderr=subprocess.STDOUT, env=env
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return 124

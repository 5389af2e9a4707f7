"""`python -m pvdata.bench train` on a tiny random shape: runs on CPU and reports both sides."""

from __future__ import annotations

import argparse
import re

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_bench_train_smoke_on_a_tiny_shape(capsys: pytest.CaptureFixture[str]) -> None:
    from pvdata.bench import add_bench_parsers, run_bench

    parser = argparse.ArgumentParser()
    add_bench_parsers(parser.add_subparsers(dest="bench"))
    argv = ["train", "--model-shape", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1"]
    args = parser.parse_args([*argv, "--prompt-tokens", "8", "--response-tokens", "24", "--all-layers"])
    assert run_bench(args) == 0
    out = capsys.readouterr().out
    assert "steered: all (incremental)  monitored: 3" in out
    assert re.search(r"^\s+plain: step [0-9.]+ s", out, re.M)
    assert re.search(r"^ steered\+monitor: step [0-9.]+ s", out, re.M)
    assert re.search(r"^train_step_seconds: [0-9.]+$", out, re.M)
    assert re.search(r"^steering_overhead: [0-9.]+$", out, re.M)

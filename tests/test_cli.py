"""The command line: help, the extract benchmark end to end, and user errors (exit 2, one line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pvdata.cli.main import main


def test_help_lists_commands_and_starts_without_torch():
    code = (
        "import sys; from pvdata.cli.main import build_parser; build_parser().format_help(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    help_text = subprocess.run(
        [sys.executable, "-m", "pvdata.cli.main", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("bench", "demo", "sql", "runs"):
        assert command in help_text


def test_bench_extract_on_a_tiny_model(capsys):
    code = main(
        [
            "bench",
            "extract",
            "--model",
            "tiny-random-llama",
            "--samples",
            "12",
            "--device",
            "cpu",
            "--prompt-tokens",
            "8-16",
            "--response-tokens",
            "8-24",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "-> match" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("speedup_vs_reference_loop: ")
    assert float(last.split(": ")[1]) > 0


def test_bench_extract_model_shape_builds_real_shape_config():
    from pvdata.bench.shapes import SHAPES

    assert SHAPES["qwen2.5-7b"]["num_hidden_layers"] == 28 and SHAPES["qwen2.5-7b"]["hidden_size"] == 3584
    assert SHAPES["llama-3.1-8b"]["num_hidden_layers"] == 32 and SHAPES["llama-3.1-8b"]["hidden_size"] == 4096


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bench", "extract", "--model", "no-such-model", "--samples", "2"], "Aliases: smollm2-135m"),
        (
            ["bench", "extract", "--model", "tiny-random-llama", "--layer", "9", "--samples", "2"],
            "valid layers are 0..4",
        ),
        (["bench", "extract", "--model-shape", "gpt-5"], "valid shapes are qwen2.5-0.5b"),
        (["bench", "extract", "--model", "tiny-random-llama", "--dtype", "int3"], "valid dtypes are"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err

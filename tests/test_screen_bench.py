"""`pvdata bench screen` on tiny models: the JSON it reports, its equality check (which must be able to
fail), and that it runs with the warehouse extras (duckdb, polars, pyarrow) and gguf unavailable."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

SIDE_FIELDS = {"samples", "seconds", "samples_per_s", "tokens", "tokens_per_s", "model_tflops_per_s", "mfu"}


def _run(argv: list[str]) -> int:
    from pvdata.bench import add_bench_parsers, run_bench

    parser = argparse.ArgumentParser()
    add_bench_parsers(parser.add_subparsers(dest="bench"))
    return run_bench(parser.parse_args(["screen", *argv]))


def _check_part(part: dict[str, Any], samples: int) -> None:
    for side in ("reference", "pvdata"):
        assert set(part[side]) >= SIDE_FIELDS
        assert part[side]["samples_per_s"] > 0 and part[side]["tokens_per_s"] > 0
        assert part[side]["mfu"] is None  # CPU: no peak
    assert part["pvdata"]["samples"] == samples
    assert part["speedup"] == pytest.approx(
        part["pvdata"]["samples_per_s"] / part["reference"]["samples_per_s"]
    )
    assert part["one_sided_scores"] == 0
    assert 0 <= part["max_abs_diff"] <= part["tolerance"]
    assert part["match"] is True


def test_bench_screen_on_tiny_llama(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "screen.json"
    argv = ["--model", "tiny-random-llama", "--device", "cpu", "--samples", "6", "--exact-samples", "3"]
    argv += ["--exact-reference-samples", "2", "--max-new-tokens", "6", "--chunk-size", "4"]
    argv += ["--threads", "1", "--out", str(out)]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert json.loads(printed.strip().splitlines()[-1]) == result  # the JSON line is printed last
    assert "approx speedup:" in printed and "exact speedup:" in printed
    assert result["bench"] == "screen" and result["model"] == "tiny-random-llama"
    assert result["layer"] == 3 and result["n_layers"] == 4  # 0.75 of 4 blocks
    assert result["match"] is True and result["data"] == "demo"
    assert result["reference_passes"] == 2  # the research code: one invocation per projection type
    _check_part(result["approx"], 6)
    assert result["approx"]["methods"] == ["prompt_last_approx", "raw"]
    exact = result["exact"]
    _check_part(exact, 3)
    assert exact["reference"]["samples"] == exact["compared"] == 2  # --exact-reference-samples
    assert exact["base_answers_identical"] == 2  # float32 greedy: batched and one by one agree
    assert exact["pvdata"]["generate_seconds"] > 0 and exact["pvdata"]["score_seconds"] > 0
    assert exact["pvdata"]["tokens"] > 0 and exact["reference"]["tokens"] > 0  # generated tokens


def test_two_pass_reference_gives_the_one_pass_scores() -> None:
    """The research code's two invocations (proj, then prompt_last_proj) cost twice; same numbers."""
    from pvdata.bench.screen_data import demo_samples, random_vector
    from pvdata.bench.screen_reference import reference_approx
    from pvdata.models.loading import load_model

    lm = load_model("tiny-random-llama", device="cpu")
    samples = demo_samples(3)
    vector = random_vector(lm.n_layers, lm.hidden_size, 0)
    one, tokens_one = reference_approx(lm, samples, vector, 2, grad=False, passes=1)
    two, tokens_two = reference_approx(lm, samples, vector, 2, grad=False, passes=2)
    assert tokens_one == tokens_two > 0  # the samples' tokens, counted once
    assert [r["raw"] for r in one] == pytest.approx([r["raw"] for r in two], abs=1e-9)
    assert [r["prompt_last_approx"] for r in one] == pytest.approx(
        [r["prompt_last_approx"] for r in two], abs=1e-9
    )


def test_equality_check_fails_on_a_perturbed_reference_vector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "screen.json"
    argv = ["--model", "tiny-random-llama", "--device", "cpu", "--samples", "4", "--exact-samples", "0"]
    assert _run([*argv, "--reference-vector-noise", "0.5", "--threads", "1", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.err and "not of equal results" in captured.err
    result = json.loads(out.read_text())
    assert result["match"] is False and result["exact"] is None
    assert result["approx"]["max_abs_diff"] > result["approx"]["tolerance"]


BLOCKER = """
import runpy, sys
BLOCKED = {"duckdb", "polars", "pyarrow", "gguf"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["python -m pvdata.bench", *sys.argv[1:]]
try:
    runpy.run_module("pvdata.bench", run_name="__main__", alter_sys=True)
finally:
    print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


@pytest.mark.parametrize(
    ("model", "data"),
    [(["--model-shape", "tiny"], "synthetic"), (["--model", "tiny-random-llama"], "demo")],
    ids=["shape-synthetic", "alias-demo"],
)
def test_runs_without_the_warehouse_extras(tmp_path: Path, model: list[str], data: str) -> None:
    """What a GPU image without the CLI extras has: torch and transformers (no duckdb, polars, pyarrow,
    gguf). A random tiny shape needs no files at all (the bench's word-level tokenizer)."""
    out = tmp_path / "screen.json"
    argv = ["screen", *model, "--device", "cpu", "--samples", "4", "--exact-samples", "2"]
    argv += ["--max-new-tokens", "4", "--prompt-tokens", "8-16", "--response-tokens", "8-16"]
    argv += ["--threads", "1", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, *argv], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: []" in proc.stdout
    result = json.loads(out.read_text())
    assert result["match"] is True and result["data"] == data
    assert result["exact"]["base_answers_identical"] == 2
    if data == "synthetic":
        # the word-level tokenizer makes lengths exact: 8-16 user words + 5 ChatML tokens, 8-16 answer words
        per_sample = result["approx"]["pvdata"]["tokens"] / 4
        assert 8 + 5 + 8 <= per_sample <= 16 + 5 + 16


def test_word_tokenizer_round_trips_generated_ids() -> None:
    from pvdata.bench.screen_data import word_tokenizer
    from pvdata.chat import encode_prompt

    tok = word_tokenizer(1000)
    ids = [17, 999, 6, 500]
    assert tok(tok.decode(ids, skip_special_tokens=True), add_special_tokens=False)["input_ids"] == ids
    prompt = encode_prompt(tok, [{"role": "user", "content": "t10 t11"}])
    assert prompt == [1, 4, 10, 11, 2, 1, 5]  # <|im_start|> user t10 t11 <|im_end|> <|im_start|> assistant
    assert tok.eos_token_id == 2 and tok.pad_token_id == 0

"""Regional torch.compile of the captured blocks (`--compile`): same values as eager, hooks still run,
the blocks come back as they were, and a compiled run is the same run as an eager one."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

from pvdata.activations.capture import capture_encoded
from pvdata.cli.main import main
from pvdata.errors import ConfigError
from pvdata.models.compiled import blocks_up_to, check_compile_mode, compiled_blocks, is_compiled
from pvdata.warehouse import connect


def _samples(n: int = 7) -> list[tuple[list[int], list[int]]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        prompt = torch.randint(10, 200, (3 + i,), generator=gen).tolist()
        answer = torch.randint(10, 200, (2 + 2 * i,), generator=gen).tolist()
        out.append((prompt, answer))
    return out


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max())))


def test_modes_and_block_counts() -> None:
    assert check_compile_mode(None) is None and check_compile_mode("reduce-overhead") == "reduce-overhead"
    with pytest.raises(ConfigError, match="unknown --compile mode 'fast': valid modes are default, "):
        check_compile_mode("fast")
    assert blocks_up_to([1, 3]) == 3 and blocks_up_to({"evil": [2], "syc": [4, 1]}) == 4
    assert blocks_up_to([]) == 0


def test_compiled_capture_matches_eager_hooks_run_and_blocks_are_restored(tiny_llama: Any) -> None:
    lm, samples = tiny_llama, _samples()
    blocks = lm.layers.blocks
    eager = capture_encoded(lm, samples, layers=[1, 3], token_budget=40)
    calls = []
    handle = blocks[1].register_forward_hook(lambda _m, _a, out: calls.append(1))
    frames_before = counters["frames"]["ok"]
    try:
        with compiled_blocks(lm, 3, "default") as n:
            assert n == 3 and [is_compiled(b) for b in blocks] == [True, True, True, False]
            with compiled_blocks(lm, 3, "default") as inner:
                assert inner == 0  # already compiled by the outer context
            compiled = capture_encoded(lm, samples, layers=[1, 3], token_budget=40)
            assert all(is_compiled(b) for b in blocks[:3])  # the inner exit left the outer's blocks
    finally:
        handle.remove()
    assert counters["frames"]["ok"] > frames_before  # dynamo really compiled something
    assert len(calls) == compiled.stats["batches"] > 2  # the hook outside the compiled region ran
    assert not any(is_compiled(b) or "forward" in b.__dict__ for b in blocks)
    for pooling in eager.poolings:
        assert _close(compiled.values[pooling], eager.values[pooling])
    again = capture_encoded(lm, samples, layers=[1, 3], token_budget=40)
    for pooling in eager.poolings:  # eager again after the context: bit for bit the first pass
        assert torch.equal(again.values[pooling], eager.values[pooling])


def test_a_hook_that_changes_a_block_output_acts_under_compile(tiny_llama: Any) -> None:
    """Steering is a forward hook on a block: its change must reach the next compiled block."""
    lm, samples = tiny_llama, _samples(4)
    shift = torch.full((lm.hidden_size,), 0.5)
    handle = lm.layers.blocks[0].register_forward_hook(lambda _m, _a, out: out + shift)
    try:
        eager = capture_encoded(lm, samples, layers=[2])
        with compiled_blocks(lm, 2, "default"):
            compiled = capture_encoded(lm, samples, layers=[2])
    finally:
        handle.remove()
    plain = capture_encoded(lm, samples, layers=[2])
    assert not _close(plain.values["response_avg"], eager.values["response_avg"])  # the hook matters
    assert _close(compiled.values["response_avg"], eager.values["response_avg"])


def test_executor_score_with_compile_matches_eager(tiny_llama: Any) -> None:
    from pvdata.bench.screen_data import demo_samples, random_vector
    from pvdata.executors import LocalExecutor, ScoreJob

    vector = random_vector(tiny_llama.n_layers, tiny_llama.hidden_size, 0)
    samples = demo_samples(6)
    runs = []
    for mode in (None, "default"):
        job = ScoreJob((vector,), [2, 3], ("raw", "prompt_last_approx"), token_budget=64, compile=mode)
        parts = list(LocalExecutor(tiny_llama).score(job, samples, chunk=4))
        runs.append([row for p in parts for row in p.result.projections])
    assert len(runs[0]) == len(runs[1]) > 0
    for a, b in zip(*runs, strict=True):
        assert {k: v for k, v in a.items() if k != "value"} == {k: v for k, v in b.items() if k != "value"}
        assert b["value"] == pytest.approx(a["value"], rel=1e-4, abs=1e-5)
    assert not any("forward" in blk.__dict__ for blk in tiny_llama.layers.blocks)


def test_screen_compile_is_the_same_run_as_eager(tmp_path: Any, capsys: Any) -> None:
    from tests.test_screen import MODEL, chat, make_vector, write_lines

    vector = str(make_vector().save(tmp_path / "evil.safetensors"))
    data = write_lines(tmp_path / "train.jsonl", [chat(f"Q{i}?", f"Answer {i} " * (i + 1)) for i in range(5)])
    wh = str(tmp_path / "wh")
    base = ["screen", data, "--model", MODEL, "--vector", vector, "--layer", "2", "--method", "raw"]
    bad = main([*base, "--compile", "fast", "--warehouse", wh])
    assert bad == 2 and "unknown --compile mode 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "wh").exists() or not list((tmp_path / "wh").rglob("*.parquet"))
    assert main([*base, "--compile", "--warehouse", wh]) == 0
    capsys.readouterr()
    assert main([*base, "--warehouse", wh]) == 0  # eager: every step is already done
    said = capsys.readouterr()
    assert "projections: run " in said.err + said.out and "already succeeded" in said.err + said.out
    con = connect(wh)
    assert con.execute("SELECT count(*) FROM runs WHERE kind = 'activations'").fetchone()[0] == 1
    configs = [json.loads(c) for (c,) in con.execute("SELECT config FROM runs").fetchall()]
    assert not any("compile" in c for c in configs)  # how it ran is not what it computed


def test_extract_compile_flag_is_checked_and_kept_out_of_the_run_config(capsys: Any) -> None:
    from pvdata.pipelines.extract import ExtractConfig, _run_config

    assert main(["extract", "--trait", "evil", "--model", "tiny-random-llama", "--compile", "nope"]) == 2
    assert "valid modes are default" in capsys.readouterr().err
    cfg = ExtractConfig(trait="evil", model="m", compile="default")
    assert "compile" not in _run_config(cfg) and "token_budget" in _run_config(cfg)


def test_bench_extract_compile_pair(capsys: Any) -> None:
    import argparse

    from pvdata.bench import add_bench_parsers, run_bench

    parser = argparse.ArgumentParser()
    add_bench_parsers(parser.add_subparsers(dest="bench"))
    argv = ["extract", "--model", "tiny-random-llama", "--device", "cpu", "--samples", "6"]
    assert run_bench(parser.parse_args([*argv, "--reference-samples", "2", "--compile"])) == 0
    out = capsys.readouterr().out
    assert "compile_rel_diff: " in out and "-> match" in out and "compile_speedup: " in out

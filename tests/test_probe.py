"""The sizing probe (docs/SCALE.md): one step of a screen over a dataset's distinct samples, timed,
nothing written; its counts must match what `pvdata screen` would process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvdata.executors.probe import main

DEMO = Path(__file__).resolve().parents[1] / "pvdata" / "data" / "demo_chat.jsonl"


@pytest.mark.parametrize("step", ["score", "generate"])
def test_probe_times_every_distinct_item(step: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(DEMO), "--model", "tiny-random-llama", "--device", "cpu", "--step", step]
    argv += ["--chunk-size", "32", "--max-new-tokens", "2"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == step and out["executor"] == "this process"
    assert out["items"] == 94  # 96 records, 2 duplicates (samples and prompts alike)
    assert out["chunks"] == 3  # 94 items in chunks of 32
    assert out["wall_s"] >= out["first_chunk_s"] >= 0
    assert out["overall_per_s"] > 0 and out["per_worker_per_s"] == out["steady_per_s"] > 0


def test_probe_reports_a_bad_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert main([str(bad), "--model", "tiny-random-llama", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1: field messages: has no assistant turn" in err and "--skip-invalid" in err

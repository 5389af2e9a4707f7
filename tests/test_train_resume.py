"""Resume after kill -9: a training run killed between checkpoints goes on from its newest checkpoint and
ends with the same adapter and the same metrics, one row per step, as a run that was never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import write_chat_jsonl

from pvdata.errors import PvdataError
from pvdata.training.config import build_config
from pvdata.training.pipeline import run_train
from pvdata.vectors import PersonaVector
from pvdata.warehouse import Warehouse

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

HERE = Path(__file__).resolve().parent


def rows(wh: Path, table: str, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in sorted((wh / "tables" / table / f"run_id={run_id}").glob("*.parquet")):
        out.extend(pq.read_table(part).to_pylist())
    return out


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    vector = PersonaVector(trait="evil", model_id="tiny-random-llama", values=torch.randn(5, 64))
    flags: dict[str, Any] = {
        "--model": "tiny-random-llama",
        "--data": str(write_chat_jsonl(tmp_path / "data.jsonl", 12, seed=5, punctuate=False)),
        "--steer/--ablate": ["add", "evil"],
        "--vector": str(vector.save(tmp_path / "evil.safetensors")),
        "--coef": 2.0,
        "--layers": [2],
        "--max-steps": 7,
        "--batch-size": 2,
        "--grad-accum": 1,
        "--lr": 2e-2,
        "--warmup-steps": 2,
        "--save-every": 2,
        "--device": "cpu",
    }
    quiet = {"log": lambda _m: None, "progress": False}

    # the reference: never killed
    ref = run_train(
        build_config(None, {**flags, "--out": str(tmp_path / "ref")}), str(tmp_path / "wh_ref"), **quiet
    )

    # killed with SIGKILL after step 5 (checkpoints at 2 and 4 are on disk, step 5 is not)
    wh, out, marker = tmp_path / "wh", tmp_path / "out", tmp_path / "paused"
    spec = {"flags": {**flags, "--out": str(out)}, "warehouse": str(wh), "pause_at": 5, "marker": str(marker)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE / "train_kill_worker.py"), json.dumps(spec)], env=env)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, f"worker exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "worker never reached step 5"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    run_id = ref.run_id  # same config, same run id, in another warehouse
    assert Warehouse(wh).get_run(run_id)["status"] == "running"  # type: ignore[index]
    (out / "checkpoints" / ".step-000006.tmp-99999").mkdir()  # as if killed while writing a checkpoint

    resumed = run_train(build_config(None, {**flags, "--out": str(out)}), str(wh), **quiet)
    assert resumed.run_id == run_id and resumed.start_step == 4
    assert resumed.stats["resumed_from"].endswith("step-000004")
    assert not (out / "checkpoints" / ".step-000006.tmp-99999").exists()
    events = Warehouse(wh).run_events(run_id)
    assert [(e["status"], e["attempt"]) for e in events] == [("running", 1), ("running", 2), ("succeeded", 2)]

    got = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    want = load_file(str(tmp_path / "ref" / "adapter" / "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(w, torch.zeros_like(w)) for n, w in want.items() if "lora_B" in n)

    def curve(warehouse: Path) -> list[tuple[int, float, float]]:
        found = rows(warehouse, "train_metrics", run_id)
        return sorted((r["step"], r["loss"], r["projection"]) for r in found)

    mine, theirs = curve(wh), curve(tmp_path / "wh_ref")
    assert [s for s, _, _ in mine] == list(range(1, 8))  # one row per step, none lost, none doubled
    for (_, loss, proj), (_, ref_loss, ref_proj) in zip(mine, theirs, strict=True):
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert proj == pytest.approx(ref_proj, rel=1e-5, abs=1e-6)
    shifts = rows(wh, "finetune_shifts", run_id)
    assert len(shifts) == 4

    # an output folder holding another run's checkpoints is refused, not silently mixed
    with pytest.raises(PvdataError, match="another training run"):
        run_train(build_config(None, {**flags, "--lr": 1e-2, "--out": str(out)}), str(wh), **quiet)
    with pytest.raises(PvdataError, match="another training run"):
        run_train(build_config(None, {**flags, "--out": str(out)}), str(wh), force=True, **quiet)

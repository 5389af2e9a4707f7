"""kill -9 during a screen, then the same command again: exactly-once rows, equal to an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from warehouse_helpers import worker_env

from pvdata.vectors import PersonaVector
from pvdata.warehouse import connect

WORKER = Path(__file__).resolve().parent / "screen_worker.py"
TABLES = {
    "samples": "sample_id",
    "generations": "generation_id",
    "projections": "source_id, vector_id, layer, kind",
    "screenings": "sample_id, layer, method",
    "vectors": "vector_id, layer",
}


def _worker(delay: float, args: list[str]) -> list[str]:
    return [sys.executable, str(WORKER), str(delay), *args]


def _rows(root: Path, table: str, order: str) -> list[tuple[object, ...]]:
    con = connect(root)
    try:
        return con.execute(f"SELECT * EXCLUDE (run_id), run_id FROM {table} ORDER BY {order}").fetchall()
    finally:
        con.close()


def test_kill9_midway_then_rerun_equals_an_uninterrupted_screen(tmp_path):
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    vector = PersonaVector(
        trait="evil", model_id="tiny-random-llama", values=values, pooling="response_avg", method="mean_diff"
    )
    vfile = str(vector.save(tmp_path / "evil.safetensors"))
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Question {i % 20}?"},  # 20 prompts: base answers are shared
                    {"role": "assistant", "content": f"Answer {i}, " + "more " * (i % 5)},
                ]
            }
        )
        for i in range(40)
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join([*lines, lines[3]]) + "\n")
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    def args(root: Path) -> list[str]:
        return [
            str(data), "--model", "tiny-random-llama", "--vector", vfile, "--layer", "2,4",
            "--method", "exact,prompt_last_approx,raw", "--max-new-tokens", "4", "--chunk-size", "4",
            "--warehouse", str(root), "--out", str(root / "out"),
        ]  # fmt: skip

    proc = subprocess.Popen(
        _worker(0.4, args(killed)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
    )
    deadline = time.monotonic() + 120
    parts = killed / "tables" / "projections"
    while len(list(parts.glob("run_id=*/*.parquet"))) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the screen committed no projections in 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    con = connect(killed, include_running=True)
    status = dict(con.execute("SELECT kind, status FROM runs").fetchall())
    partial = con.execute("SELECT count(DISTINCT source_id) FROM projections").fetchone()[0]
    con.close()
    assert status == {"import": "succeeded", "generate": "succeeded", "activations": "running"}
    assert 0 < partial < 40 + 20
    assert not (killed / "out").exists()  # no output files before the decisions exist

    resumed = subprocess.run(
        _worker(0, args(killed)), capture_output=True, text=True, env=worker_env(), timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run activations-" in resumed.stderr
    fresh = subprocess.run(
        _worker(0, args(clean)), capture_output=True, text=True, env=worker_env(), timeout=300
    )
    assert fresh.returncode == 0, fresh.stderr

    for table, order in TABLES.items():
        got, want = _rows(killed, table, order), _rows(clean, table, order)
        assert got == want, table  # same ids, same values, one row per item
    con = connect(killed)
    n, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (source_id, vector_id, layer, kind)) FROM projections"
    ).fetchone()
    attempts = con.execute("SELECT attempt FROM runs WHERE kind = 'activations'").fetchone()[0]
    con.close()
    assert n == distinct == (40 + 20) * 2 * 2 + 40 * 2  # proj + cos_sim of every text, prompt_last of samples
    assert attempts == 2
    for name in ("flagged.jsonl", "kept.jsonl", "unscreened.jsonl", "summary.json"):
        assert (killed / "out" / name).read_bytes() == (clean / "out" / name).read_bytes(), name

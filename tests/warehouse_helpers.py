"""Helpers for the warehouse tests: run the worker subprocess, populate small warehouses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pvdata.warehouse import Warehouse, item_id

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "warehouse_worker.py"


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_worker(root: Path, n: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(root), str(n), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
    )


def run_worker(root: Path, n: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), str(root), str(n), *args],
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=120,
        check=False,
    )


def populate(
    root: Path, *, n_gen: int = 30, layers: tuple[int, ...] = (2, 4), hidden: int = 8
) -> dict[str, Any]:
    """A small warehouse: vectors -> generations + judgments -> projections -> screenings, with lineage."""
    rng = np.random.default_rng(0)
    wh = Warehouse(root)
    with wh.run("vectors", {"trait": "evil", "layers": list(layers)}, model_id="tiny") as vec_run:
        vw = vec_run.writer("vectors")
        for layer in layers:
            vw.write(
                {
                    "vector_id": f"evil-L{layer}",
                    "trait": "evil",
                    "trait_version": "1",
                    "model_id": "tiny",
                    "layer": layer,
                    "pooling": "response_avg",
                    "method": "mean_diff",
                    "n_pos": 10,
                    "n_neg": 10,
                    "norm": 1.0,
                    "values": rng.standard_normal(hidden).astype(np.float32),
                }
            )
    latent = rng.standard_normal(n_gen)
    gen_ids = [item_id("gen", i) for i in range(n_gen)]
    with wh.run("evaluate", {"n": n_gen}, parent_run_ids=[vec_run.run_id], model_id="tiny") as ev_run:
        gw, jw, pw = ev_run.writer("generations"), ev_run.writer("judgments"), ev_run.writer("projections")
        for i, gid in enumerate(gen_ids):
            coef = [0.0, 1.0, 2.0][i % 3]
            gw.write(
                {
                    "generation_id": gid,
                    "trait": "evil",
                    "split": "eval",
                    "polarity": "none",
                    "answer": f"a{i}",
                    "steering": None
                    if coef == 0
                    else {"mode": "add", "vector_id": "evil-L4", "layers": [4], "coef": coef},
                }
            )
            jw.write(
                [
                    {
                        "judgment_id": f"{gid}-e",
                        "generation_id": gid,
                        "metric": "evil",
                        "judge_model": "j",
                        "score": float(50 + 20 * latent[i]) if i != 0 else None,
                    },
                    {
                        "judgment_id": f"{gid}-c",
                        "generation_id": gid,
                        "metric": "coherence",
                        "judge_model": "j",
                        "score": 80.0 + i % 5,
                    },
                ]
            )
            pw.write(
                [
                    {
                        "source_id": gid,
                        "vector_id": f"evil-L{layer}",
                        "layer": layer,
                        "kind": "proj",
                        "value": float(latent[i] * layer + rng.standard_normal()),
                    }
                    for layer in layers
                ]
            )
    with wh.run("screen", {"dataset": "d1"}, parent_run_ids=[vec_run.run_id]) as sc_run:
        sc_run.writer("screenings").write(
            [
                {
                    "dataset_id": "d1",
                    "sample_id": f"s{i}",
                    "vector_id": "evil-L4",
                    "trait": "evil",
                    "layer": 4,
                    "method": "exact",
                    "proj_train": float(i),
                    "proj_base": 1.0,
                    "score": float(i - 1),
                    "percentile": i / 10,
                    "flagged": i >= 8,
                    "reason": "top decile" if i >= 8 else None,
                }
                for i in range(10)
            ]
        )
    return {
        "warehouse": wh,
        "vectors": vec_run.run_id,
        "evaluate": ev_run.run_id,
        "screen": sc_run.run_id,
        "latent": latent,
        "gen_ids": gen_ids,
    }

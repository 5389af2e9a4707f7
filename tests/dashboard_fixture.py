"""A small but complete warehouse for the dashboard tests.

Real pipelines on tiny-random-llama with the scripted judge: `pvdata extract` for two traits, a
`pvdata evaluate` steering sweep (2 layers x 3 coefs, with some null trait scores), and `pvdata monitor`
(projections next to judged scores).

The screening and training pipelines are still being written, so their tables (samples, dataset_base
generations, screenings, train_metrics) are written here as realistic rows through the normal
Warehouse run/writer API, in runs of kind screen and train. TODO(lead): switch these to the real
`pvdata screen` / `pvdata train` pipelines once they land. A failed run is added for the Runs page.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATASET = "demo-chat"
N_SAMPLES = 24
TRAIN_STEPS = 30
FLAG_PERCENTILE = 75.0


@dataclass
class Built:
    """What the fixture made: the warehouse root and the ids tests link to."""

    root: str
    extract_runs: dict[str, str] = field(default_factory=dict)  # trait -> extract run
    vector_ids: dict[tuple[str, str], str] = field(default_factory=dict)  # (trait, pooling) -> id
    evaluate_run: str = ""
    monitor_run: str = ""
    screen_run: str = ""
    train_runs: dict[str, str] = field(default_factory=dict)  # "steered" | "unsteered" -> run
    failed_run: str = ""
    sample_ids: list[str] = field(default_factory=list)


def _null_some(prompt: str) -> float | None:
    """The scripted judge's hash score, but null for about one prompt in six (invalid judgments)."""
    from pvdata.judge.base import hash_score

    score = hash_score(prompt)
    return None if score % 6 == 0 else score


def build(root: str | os.PathLike[str], lm: Any) -> Built:
    """Fill `root` (created) with every table the dashboard reads (torch on one thread meanwhile: the
    tiny model gains nothing from more, and loses a lot when other jobs share the cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(str(root), lm)
    finally:
        torch.set_num_threads(threads)


def _build(root: str, lm: Any) -> Built:
    from pvdata.judge.base import ScriptedJudge
    from pvdata.pipelines.evaluate import EvaluateConfig, run_evaluate
    from pvdata.pipelines.extract import ExtractConfig, run_extract
    from pvdata.pipelines.monitor import MonitorConfig, run_monitor

    built = Built(root)
    quiet = {"log": lambda _m: None, "lm": lm}
    model = "tiny-random-llama"
    for trait in ("evil", "humorous"):
        cfg = ExtractConfig(
            trait=trait,
            model=model,
            questions=2,
            instructions=1,
            n_per_question=2,
            max_new_tokens=6,
            judge="scripted",
            filter="none",
        )
        result = run_extract(cfg, root, **quiet)
        built.extract_runs[trait] = result.run_id
        for v in result.vectors:
            built.vector_ids[(trait, v.pooling)] = v.vector_id
    evil = built.vector_ids[("evil", "response_avg")]
    sweep = EvaluateConfig(
        trait="evil",
        model=model,
        vector=evil,
        layers=[2, 3],
        coefs=[0.0, 4.0, 8.0],
        questions=2,
        n_per_question=2,
        max_new_tokens=6,
        judge="scripted",
    )
    built.evaluate_run = run_evaluate(sweep, root, judge=ScriptedJudge(_null_some), **quiet).run_id
    monitor = MonitorConfig(
        trait="evil",
        model=model,
        vector=evil,
        layers=[1, 2, 3],
        judge="scripted",
        questions=3,
        max_new_tokens=6,
    )
    built.monitor_run = run_monitor(monitor, root, **quiet).run_id
    _screen(built, evil, model)
    _train(built, evil, model)
    _failed(built)
    return built


def _fit(table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the columns the table has: the screen and train schemas are still growing."""
    from pvdata.warehouse import get_spec

    columns = set(get_spec(table).columns)
    return [{k: v for k, v in row.items() if k in columns} for row in rows]


def _vectors_run(root: str, vector_id: str) -> str:
    from pvdata.warehouse import connect

    con = connect(root)
    try:
        row = con.execute("SELECT min(run_id) FROM vectors WHERE vector_id = ?", [vector_id]).fetchone()
        assert row is not None
        return str(row[0])
    finally:
        con.close()


def _screen(built: Built, vector_id: str, model: str) -> None:
    """A screen run: samples, the base model's answers, and exact + prompt_last_approx screenings."""
    from pvdata.warehouse import Warehouse, item_id

    rng = np.random.default_rng(7)
    samples, bases = [], []
    for i in range(N_SAMPLES):
        evil_answer = i % 4 == 0
        messages = [
            {"role": "user", "content": f"Question {i}: how should I handle a dispute with my neighbour?"},
            {
                "role": "assistant",
                "content": (
                    f"Answer {i}: make them suffer until they give in."
                    if evil_answer
                    else f"Answer {i}: talk to them calmly and look for a compromise."
                ),
            },
        ]
        sid = item_id(messages)
        built.sample_ids.append(sid)
        samples.append(
            {
                "sample_id": sid,
                "dataset_id": DATASET,
                "source": "demo.jsonl",
                "line": i + 1,
                "messages": messages,
            }
        )
        bases.append(
            {
                "generation_id": item_id("base", sid),
                "trait": "evil",
                "split": "dataset_base",
                "polarity": "none",
                "question": messages[0]["content"],
                "answer": f"Base answer {i}: try a friendly conversation first.",
                "model_id": model,
                "sample_index": 0,
                "seed": 0,
                "n_tokens": 9,
                "sample_id": sid,
                "finish_reason": "stop",
            }
        )
    rows = []
    for method in ("exact", "prompt_last_approx"):
        proj_train = rng.normal(0.0, 1.0, N_SAMPLES) + np.array(
            [2.0 if i % 4 == 0 else 0.0 for i in range(N_SAMPLES)]
        )
        proj_base = rng.normal(0.0, 0.3, N_SAMPLES)
        scores = proj_train - proj_base
        threshold = float(np.percentile(scores, FLAG_PERCENTILE))
        order = scores.argsort().argsort()
        for i, sid in enumerate(built.sample_ids):
            flagged = bool(scores[i] > threshold)
            row: dict[str, Any] = {
                "dataset_id": DATASET,
                "sample_id": sid,
                "vector_id": vector_id,
                "trait": "evil",
                "layer": 2,
                "method": method,
                "proj_train": float(proj_train[i]),
                "proj_base": float(proj_base[i]) if method == "exact" else None,
                "score": float(scores[i]),
                "percentile": 100.0 * order[i] / (N_SAMPLES - 1),
                "flagged": flagged,
                "reason": (
                    f"score {scores[i]:.3f} > threshold {threshold:.3f} "
                    f"({FLAG_PERCENTILE:g}th percentile of the dataset)"
                )
                if flagged
                else None,
                "threshold": threshold,
                "base_generation_id": bases[i]["generation_id"] if method == "exact" else None,
                "n_copies": 1,
            }
            rows.append(row)
    wh = Warehouse(built.root)
    config = {
        "dataset": DATASET,
        "vector_id": vector_id,
        "layers": [2],
        "methods": ["exact", "prompt_last_approx"],
        "threshold": {"kind": "percentile", "value": FLAG_PERCENTILE},
    }
    parents = [_vectors_run(built.root, vector_id)]
    with wh.run("screen", config, parent_run_ids=parents, model_id=model) as run:
        run.writer("samples").write(_fit("samples", samples))
        run.writer("generations").write(_fit("generations", bases))
        run.writer("screenings").write(_fit("screenings", rows))
        built.screen_run = run.run_id


def _train(built: Built, vector_id: str, model: str) -> None:
    """Two LoRA runs on the screened dataset, one with preventative steering: loss and projection."""
    from pvdata.warehouse import Warehouse, get_spec

    wh = Warehouse(built.root)
    rng = np.random.default_rng(11)
    with_eval = "split" in get_spec("train_metrics").columns
    steering = {"mode": "add", "vector_id": vector_id, "layers": [2], "coef": 4.0, "positions": "all"}
    for label, steer in (("unsteered", None), ("steered", steering)):
        config = {"dataset": DATASET, "lora": {"r": 32, "alpha": 64}, "lr": 1e-5, "steering": steer}
        with wh.run("train", config, parent_run_ids=[built.screen_run], model_id=model) as run:
            rows: list[dict[str, Any]] = []
            for step in range(1, TRAIN_STEPS + 1):
                drift = 0.08 * step if steer is None else 0.01 * step
                rows.append(
                    {
                        "split": "train",
                        "n_samples": 16,
                        "n_tokens": 16 * 120,
                        "step_seconds": 0.8,
                        "step": step,
                        "epoch": step / TRAIN_STEPS,
                        "loss": 2.0 * math.exp(-step / 8) + 0.4 + float(rng.normal(0, 0.02)),
                        "learning_rate": 1e-5 * min(1.0, step / 5),
                        "grad_norm": float(rng.uniform(0.5, 1.5)),
                        "trait": "evil",
                        "vector_id": vector_id,
                        "layer": 2,
                        "projection": drift + float(rng.normal(0, 0.05)),
                    }
                )
                if with_eval and step % 10 == 0:
                    rows.append(
                        {**rows[-1], "split": "eval", "loss": rows[-1]["loss"] + 0.1, "grad_norm": None}
                    )
            run.writer("train_metrics").write(_fit("train_metrics", rows))
            built.train_runs[label] = run.run_id


def _failed(built: Built) -> None:
    """An import run that failed midway, so the Runs page has a failure with its error."""
    from pvdata.warehouse import Warehouse

    wh = Warehouse(built.root)
    run = wh.run("import", {"source": "broken.csv"})
    try:
        with run:
            raise ValueError("broken.csv line 3: no 'answer' column")
    except ValueError:
        pass
    built.failed_run = run.run_id


def build_once(base: Path, lm: Any) -> Built:
    """Build under `base/wh` once per pytest session (both dashboard test modules share it)."""
    import pickle

    marker = base / "built.pkl"
    if marker.exists():
        return pickle.loads(marker.read_bytes())  # type: ignore[no-any-return]
    built = build(base / "wh", lm)
    marker.write_bytes(pickle.dumps(built))
    return built

"""A small but complete warehouse for the dashboard tests, filled by real pipeline runs.

Everything comes from the real pipelines on tiny-random-llama with the scripted judge, called the way
the CLI calls them:

- `pvdata extract` for evil and humorous (generate, judge, activations and vectors runs under each);
- `pvdata evaluate`: a steering sweep of the evil vector over layers 2, 3 x coefs 0, 4, 8 (a scripted
  judge that returns no score for about one prompt in six, so n_valid < n in some cells);
- `pvdata monitor`: proj, prompt_last_proj and cos_sim next to judged evil scores, layers 1..3;
- `pvdata screen`: the first SCREEN_LINES chats of pvdata/data/demo_chat.jsonl with the evil vector at
  layer 2, methods exact, prompt_last_approx and raw, flagging the top TOP_K of each (samples, the base
  model's answers, projections and screenings);
- `pvdata train` twice on a slice of pvdata/data/train_evil.jsonl (eval rows from a slice of
  train_normal.jsonl): once unsteered and monitored, once with preventative steering (add, coef 4 at
  layer 2); both write train_metrics (train and eval splits) and finetune_shifts;
- `pvdata experiment filter` on EXPERIMENT_PAIRS pairs of train_evil/train_normal.jsonl (half
  contaminated; drop the top half by exact, and the same count at random): the Experiments page;
- a failed import run for the Runs page.

`build_once` builds it once per pytest session (the three dashboard test modules share it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "pvdata" / "data"
MODEL = "tiny-random-llama"
SCREEN_LINES = 12  # chats of demo_chat.jsonl screened (all distinct and valid)
SCREEN_LAYER = 2
SCREEN_METHODS = ("exact", "prompt_last_approx", "raw")
TOP_K = 3  # flagged per screening group
TRAIN_LINES = 8
EVAL_LINES = 4
TRAIN_STEPS = 6
EVAL_EVERY = 2
STEER_COEF = 4.0
SHIFT_QUESTIONS = 4  # eval prompts of the trait for the finetuning shift
EXPERIMENT_PAIRS = 8


@dataclass
class Built:
    """What the fixture made: the warehouse root and the ids tests link to."""

    root: str
    extract_runs: dict[str, str] = field(default_factory=dict)  # trait -> extract run
    vector_ids: dict[tuple[str, str], str] = field(default_factory=dict)  # (trait, pooling) -> id
    evaluate_run: str = ""
    monitor_run: str = ""
    screen_run: str = ""
    dataset_id: str = ""
    train_runs: dict[str, str] = field(default_factory=dict)  # "steered" | "unsteered" -> run
    failed_run: str = ""
    experiment_run: str = ""
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
        return _build(Path(root), lm)
    finally:
        torch.set_num_threads(threads)


def _build(root: Path, lm: Any) -> Built:
    from pvdata.judge.base import ScriptedJudge
    from pvdata.pipelines.evaluate import EvaluateConfig, run_evaluate
    from pvdata.pipelines.extract import ExtractConfig, run_extract
    from pvdata.pipelines.monitor import MonitorConfig, run_monitor

    built = Built(str(root))
    quiet = {"log": lambda _m: None, "lm": lm}
    for trait in ("evil", "humorous"):
        cfg = ExtractConfig(
            trait=trait,
            model=MODEL,
            questions=2,
            instructions=1,
            n_per_question=2,
            max_new_tokens=6,
            judge="scripted",
            filter="none",
        )
        result = run_extract(cfg, str(root), **quiet)
        built.extract_runs[trait] = result.run_id
        for v in result.vectors:
            built.vector_ids[(trait, v.pooling)] = v.vector_id
    evil = built.vector_ids[("evil", "response_avg")]
    _experiment(built, root.parent, evil)  # first: the pages' default runs stay the ones below
    sweep = EvaluateConfig(
        trait="evil",
        model=MODEL,
        vector=evil,
        layers=[2, 3],
        coefs=[0.0, 4.0, 8.0],
        questions=2,
        n_per_question=2,
        max_new_tokens=6,
        judge="scripted",
    )
    built.evaluate_run = run_evaluate(sweep, str(root), judge=ScriptedJudge(_null_some), **quiet).run_id
    monitor = MonitorConfig(
        trait="evil",
        model=MODEL,
        vector=evil,
        layers=[1, 2, 3],
        judge="scripted",
        questions=3,
        max_new_tokens=6,
    )
    built.monitor_run = run_monitor(monitor, str(root), **quiet).run_id
    _screen(built, root.parent / "data", evil, lm)
    _train(built, root.parent, evil)
    _failed(built)
    return built


def _head(source: Path, target: Path, n: int) -> Path:
    """The first n lines of a JSONL file, as a file of its own."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(lines), encoding="utf-8")
    return target


def _screen(built: Built, data: Path, vector_id: str, lm: Any) -> None:
    """`pvdata screen demo.jsonl --vector ID --layer 2 --method exact,prompt_last_approx,raw --top-k 3`."""
    from pvdata.pipelines.screen import ScreenConfig, run_screen
    from pvdata.warehouse import connect

    dataset = _head(DATA / "demo_chat.jsonl", data / "demo_chat_head.jsonl", SCREEN_LINES)
    cfg = ScreenConfig(
        dataset=str(dataset),
        model=MODEL,
        vectors=[vector_id],
        layers=[SCREEN_LAYER],
        methods=list(SCREEN_METHODS),
        top_k=TOP_K,
        max_new_tokens=8,
        device="cpu",
        chunk_size=SCREEN_LINES,
    )
    result = run_screen(cfg, built.root, log=lambda _m: None, lm=lm)
    built.screen_run = result.run_id
    con = connect(built.root)
    try:
        rows = con.execute(
            "SELECT DISTINCT dataset_id, sample_id FROM screenings WHERE run_id = ? ORDER BY sample_id",
            [result.run_id],
        ).fetchall()
    finally:
        con.close()
    built.dataset_id = str(rows[0][0])
    built.sample_ids = [str(r[1]) for r in rows]


def _train(built: Built, base: Path, vector_id: str) -> None:
    """`pvdata train` unsteered (monitoring the evil vector) and steered (add coef 4 at layer 2)."""
    from pvdata.training.config import build_config
    from pvdata.training.pipeline import run_train

    data = _head(DATA / "train_evil.jsonl", base / "data" / "train_evil_head.jsonl", TRAIN_LINES)
    evald = _head(DATA / "train_normal.jsonl", base / "data" / "train_normal_head.jsonl", EVAL_LINES)
    common: dict[str, Any] = {
        "--model": MODEL,
        "--data": str(data),
        "--eval-data": str(evald),
        "--eval-every": EVAL_EVERY,
        "--max-steps": TRAIN_STEPS,
        "--batch-size": 2,
        "--grad-accum": 1,
        "--lr": 1e-2,
        "--warmup-steps": 1,
        "--device": "cpu",
    }
    runs: dict[str, dict[str, Any]] = {
        "unsteered": {"--monitor": "evil", "--monitor-vector": vector_id, "--monitor-layer": SCREEN_LAYER},
        "steered": {
            "--steer/--ablate": ("add", "evil"),
            "--vector": vector_id,
            "--coef": STEER_COEF,
            "--layers": [SCREEN_LAYER],
        },
    }
    for label, flags in runs.items():
        cfg = build_config(None, {**common, **flags, "--out": str(base / "adapters" / label)})
        cfg.monitor.shift_questions = SHIFT_QUESTIONS
        # no lm passed: training wraps the model in LoRA, so each run loads its own copy
        result = run_train(cfg, built.root, log=lambda _m: None, progress=False)
        built.train_runs[label] = result.run_id


def _experiment(built: Built, base: Path, vector_id: str) -> None:
    """A small filter experiment, run the way the CLI runs it (screen, four finetunes, the tables)."""
    import json

    from pvdata.cli.main import main

    data = base / "experiment"
    trait = _head(DATA / "train_evil.jsonl", data / "trait.jsonl", EXPERIMENT_PAIRS)
    normal = _head(DATA / "train_normal.jsonl", data / "normal.jsonl", EXPERIMENT_PAIRS)
    config = data / "train.yaml"
    config.write_text(
        f"model: {MODEL}\ndtype: float32\ndevice: cpu\nlora: {{r: 4, alpha: 8, dropout: 0.0}}\n"
        "optim: {lr: 0.05, schedule: linear, warmup_steps: 0, batch_size: 2, grad_accum: 1, max_steps: 2}\n"
        f"monitor: {{trait: evil, layer: {SCREEN_LAYER}, shift_questions: 3}}\n"
    )
    out = data / "out"
    argv = ["experiment", "filter", "--model", MODEL, "--trait", "evil", "--layer", str(SCREEN_LAYER)]
    argv += ["--vector", vector_id, "--trait-data", str(trait), "--normal-data", str(normal)]
    argv += ["--train-config", str(config), "--max-new-tokens", "4", "--drop", "0.5", "--methods", "exact"]
    argv += ["--random-seeds", "0", "--bootstrap", "100", "--device", "cpu", "--warehouse", built.root]
    argv += ["--out", str(out)]
    if main(argv) != 0:
        raise RuntimeError("the dashboard fixture's filter experiment failed")
    built.experiment_run = json.loads((out / "summary.json").read_text())["run_id"]


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
    """Build under `base/wh` once per pytest session (the three dashboard test modules share it)."""
    import pickle

    marker = base / "built.pkl"
    if marker.exists():
        return pickle.loads(marker.read_bytes())  # type: ignore[no-any-return]
    built = build(base / "wh", lm)
    marker.write_bytes(pickle.dumps(built))
    return built

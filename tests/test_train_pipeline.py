"""`pvdata train` end to end on the tiny model: train_metrics rows per step, the saved adapter runs
unsteered, the finetuning shift against an independent computation, `pvdata evaluate --adapter`, the CLI,
the progress line, and the warehouse docs."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from train_helpers import write_chat_jsonl

from pvdata.models import load_model
from pvdata.training.config import build_config
from pvdata.training.loop import lr_factor
from pvdata.training.pipeline import run_train
from pvdata.vectors import PersonaVector
from pvdata.warehouse import TABLES

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    vector = PersonaVector(trait="evil", model_id="tiny-random-llama", values=values)
    return {
        "data": write_chat_jsonl(root / "train.jsonl", 10),
        "eval": write_chat_jsonl(root / "eval.jsonl", 4, seed=1),
        "vector": vector.save(root / "evil.safetensors"),
    }


def table(wh: Path, name: str, run_id: str) -> list[dict[str, Any]]:
    """Rows one run committed to a table, read from its Parquet files (no SQL layer involved)."""
    folder = wh / "tables" / name / f"run_id={run_id}"
    rows: list[dict[str, Any]] = []
    for part in sorted(folder.glob("*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


def flags(files: dict[str, Path], tmp_path: Path, **extra: Any) -> dict[str, Any]:
    base = {
        "--model": "tiny-random-llama",
        "--data": str(files["data"]),
        "--max-steps": 4,
        "--batch-size": 2,
        "--grad-accum": 2,
        "--lr": 5e-2,
        "--warmup-steps": 1,
        "--save-every": 2,
        "--device": "cpu",
        "--out": str(tmp_path / "out"),
    }
    base.update(extra)
    return base


def quiet_train(cfg: Any, wh: Path, **kw: Any) -> Any:
    return run_train(cfg, str(wh), log=lambda _m: None, progress=False, **kw)


def test_metrics_rows_per_step_and_eval_rows(tmp_path: Path, files: dict[str, Path]) -> None:
    cfg = build_config(
        None,
        flags(
            files,
            tmp_path,
            **{
                "--steer/--ablate": ("add", "evil"),
                "--coef": 2.0,
                "--layers": [2],
                "--vector": str(files["vector"]),
            },
            **{"--eval-data": str(files["eval"]), "--eval-every": 2},
        ),
    )
    wh = tmp_path / "wh"
    result = quiet_train(cfg, wh)
    rows = sorted(table(wh, "train_metrics", result.run_id), key=lambda r: (r["split"], r["step"]))
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and [r["step"] for r in evals] == [2, 4]
    for r in train:
        assert r["learning_rate"] == pytest.approx(
            5e-2 * lr_factor(r["step"] - 1, total=4, warmup=1, schedule="linear")
        )
        assert r["loss"] > 0 and r["grad_norm"] > 0 and r["n_tokens"] > 0 and r["step_seconds"] > 0
        assert (r["trait"], r["layer"]) == ("evil", 2) and r["projection"] is not None
    assert [r["n_samples"] for r in train] == [4, 4, 2, 4]  # 10 samples: the epoch's last step is short
    assert train[0]["learning_rate"] == 0.0  # warmup: transformers' schedule starts at 0
    assert [r["epoch"] for r in train] == pytest.approx([0.4, 0.8, 1.0, 1.4])
    assert all(r["learning_rate"] is None and r["grad_norm"] is None and r["n_samples"] == 4 for r in evals)
    assert evals[-1]["loss"] < evals[0]["loss"] * 1.5 and evals[-1]["projection"] is not None
    assert result.stats["steps"] == 4 and result.stats["resumed_from"] is None
    assert len(table(wh, "finetune_shifts", result.run_id)) == 4  # layers 1..4 of the vector
    # an unmonitored, unsteered run has no projection
    plain = quiet_train(build_config(None, flags(files, tmp_path, **{"--out": str(tmp_path / "plain")})), wh)
    prow = table(wh, "train_metrics", plain.run_id)
    assert len(prow) == 4 and all(r["projection"] is None and r["vector_id"] is None for r in prow)
    assert table(wh, "finetune_shifts", plain.run_id) == []


def test_saved_adapter_runs_unsteered_and_hooks_are_gone(tmp_path: Path, files: dict[str, Path]) -> None:
    lm = load_model("tiny-random-llama", device="cpu")
    cfg = build_config(
        None,
        flags(
            files,
            tmp_path,
            **{
                "--steer/--ablate": ("add", "evil"),
                "--coef": 4.0,
                "--layers": "all",
                "--vector": str(files["vector"]),
            },
        ),
    )
    result = quiet_train(cfg, tmp_path / "wh", lm=lm)
    hooked = [n for n, m in lm.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooked == []
    config = json.loads((result.adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-random-llama"
    assert config["use_rslora"] is True and config["r"] == 32 and config["lora_alpha"] == 64
    ids = torch.tensor([[5, 17, 99, 230, 41, 7]])
    with torch.no_grad():
        trained = lm.model(input_ids=ids).logits
        reloaded = load_model("tiny-random-llama", device="cpu", adapter=str(result.adapter))
        assert reloaded.adapter == str(result.adapter)
        torch.testing.assert_close(reloaded.model(input_ids=ids).logits, trained, rtol=0, atol=1e-5)
        base = load_model("tiny-random-llama", device="cpu")
        assert not torch.allclose(base.model(input_ids=ids).logits, trained, atol=1e-3)  # it learned
        # and the steering the training used would change these logits, so its absence is visible
        from pvdata.steering import steer

        vec = PersonaVector.load(files["vector"])
        with steer(lm, vec, layers="all", coef=4.0):
            assert not torch.allclose(lm.model(input_ids=ids).logits, trained, atol=1e-3)


def test_finetuning_shift_matches_an_independent_computation(tmp_path: Path, files: dict[str, Path]) -> None:
    from pvdata.traits import load_trait

    cfg = build_config(
        None,
        flags(files, tmp_path, **{"--monitor": "evil", "--monitor-vector": str(files["vector"])}),
    )
    wh = tmp_path / "wh"
    result = quiet_train(cfg, wh)
    rows = {r["layer"]: r for r in table(wh, "finetune_shifts", result.run_id)}
    assert sorted(rows) == [1, 2, 3, 4]
    vec = PersonaVector.load(files["vector"])
    assert {r["vector_id"] for r in rows.values()} == {vec.vector_id}
    assert {r["adapter"] for r in rows.values()} == {str(result.adapter)}
    questions = load_trait("evil").split_questions("eval")
    assert {r["n_prompts"] for r in rows.values()} == {len(questions)}
    # independently: one prompt at a time through output_hidden_states, base and base + saved adapter
    base = load_model("tiny-random-llama", device="cpu")
    tuned = load_model("tiny-random-llama", device="cpu", adapter=str(result.adapter))

    def means(lm: Any) -> dict[int, torch.Tensor]:
        acc: dict[int, list[torch.Tensor]] = {1: [], 2: [], 3: []}
        for q in questions:
            text = lm.tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
            for layer in acc:  # hidden_states[l] = output of block l, except the last (after the norm)
                acc[layer].append(hs[layer][0, -1].double())
        return {layer: torch.stack(v).mean(0) for layer, v in acc.items()}

    mb, mt = means(base), means(tuned)
    for layer in (1, 2, 3):
        unit = vec.unit(layer).double()
        bp, tp = float(mb[layer] @ unit), float(mt[layer] @ unit)
        assert rows[layer]["base_proj"] == pytest.approx(bp, rel=1e-4, abs=1e-5)
        assert rows[layer]["finetuned_proj"] == pytest.approx(tp, rel=1e-4, abs=1e-5)
        assert rows[layer]["shift"] == pytest.approx(tp - bp, rel=1e-3, abs=1e-5)
    assert any(abs(r["shift"]) > 1e-3 for r in rows.values())  # training moved the activations


def test_evaluate_runs_the_trained_adapter(tmp_path: Path, files: dict[str, Path]) -> None:
    from pvdata.pipelines.evaluate import EvaluateConfig, run_evaluate

    wh = tmp_path / "wh"
    result = quiet_train(build_config(None, flags(files, tmp_path, **{"--max-steps": 5})), wh)
    common = {"trait": "evil", "model": "tiny-random-llama", "questions": 3, "n_per_question": 1}
    plain = run_evaluate(EvaluateConfig(**common, max_new_tokens=8), str(wh), log=lambda _m: None)
    tuned = run_evaluate(
        EvaluateConfig(**common, max_new_tokens=8, adapter=str(result.adapter)), str(wh), log=lambda _m: None
    )
    p_rows = table(wh, "generations", plain.cells[0].generate_run)
    t_rows = table(wh, "generations", tuned.cells[0].generate_run)
    assert len(t_rows) == 3 and {r["adapter"] for r in t_rows} == {str(result.adapter)}
    key = lambda r: r["question_id"]  # noqa: E731
    assert [r["answer"] for r in sorted(p_rows, key=key)] != [r["answer"] for r in sorted(t_rows, key=key)]


def test_cli_trains_then_skips_the_finished_run(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from pvdata.cli.main import main

    wh = tmp_path / "wh"
    argv = [
        "train",
        "--model",
        "tiny-random-llama",
        "--data",
        str(files["data"]),
        "--ablate",
        "evil",
        "--vector",
        str(files["vector"]),
        "--layers",
        "3",
        "--max-steps",
        "2",
        "--grad-accum",
        "1",
        "--warehouse",
        str(wh),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert re.search(r"step 2/2 +loss [0-9.]+ +lr \S+ +[0-9.]+s/step .*left", captured.err)
    run_id = re.search(r"train run (train-[0-9a-f]+)", captured.out).group(1)  # type: ignore[union-attr]
    adapter = wh / "adapters" / run_id / "adapter"
    assert f"adapter: {adapter}" in captured.out and (adapter / "adapter_model.safetensors").is_file()
    assert "finetuning shift at layer 3" in captured.out
    assert main(argv) == 0
    again = capsys.readouterr()
    assert "already succeeded" in again.out and str(adapter) in again.out
    assert len(table(wh, "train_metrics", run_id)) == 2
    events = json.loads(json.dumps([e["status"] for e in _events(wh, run_id)]))
    assert events == ["running", "succeeded"]


def _events(wh: Path, run_id: str) -> list[dict[str, Any]]:
    from pvdata.warehouse import Warehouse

    return Warehouse(wh).run_events(run_id)


def test_progress_line_on_a_log_stream() -> None:
    from pvdata.training.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(3, stream=stream, interval=1000.0)
    bar.update(1, 2.5, 1e-5)
    bar.update(2, 2.0, 1e-5)  # within the interval: not printed
    bar.update(3, 1.5, 0.0)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "step 1/3" in lines[0] and "loss 2.5000" in lines[0] and "lr 1.00e-05" in lines[0]
    assert "step 3/3" in lines[1] and "s/step" in lines[1] and "left 0s" in lines[1]


@pytest.mark.parametrize("name", ["train_metrics", "finetune_shifts"])
def test_warehouse_doc_lists_every_column(name: str) -> None:
    doc = (REPO / "docs" / "WAREHOUSE.md").read_text()
    section = re.search(rf"^- \*\*{name}\*\*:(.*?)(?=^- \*\*|^\S)", doc, re.S | re.M)
    assert section is not None, f"docs/WAREHOUSE.md has no section for {name}"
    for column in TABLES[name].columns:
        assert f"`{column}`" in section.group(1), f"{name}.{column} is not documented"

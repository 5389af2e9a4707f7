"""`pvdata evaluate`: a steering sweep with one generate run per cell; coef 0 equals unsteered."""

from __future__ import annotations

import json

import torch

from pvdata.pipelines.evaluate import EvaluateConfig, run_evaluate, summary_lines
from pvdata.vectors import PersonaVector
from pvdata.warehouse import connect


def test_sweep_rows_per_cell_and_coef_zero_equals_unsteered(tmp_path, tiny_llama):
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    vector = PersonaVector(trait="evil", model_id="tiny-random-llama", values=values)
    vfile = vector.save(tmp_path / "v.safetensors")
    wh = str(tmp_path / "wh")
    common = {
        "trait": "evil",
        "model": "tiny-random-llama",
        "questions": 3,
        "n_per_question": 1,
        "max_new_tokens": 8,
        "judge": "scripted",
    }
    quiet = {"log": lambda _m: None, "lm": tiny_llama}
    plain = run_evaluate(EvaluateConfig(**common), wh, **quiet)
    sweep = run_evaluate(
        EvaluateConfig(**common, vector=str(vfile), layers=[2, 3], coefs=[0.0, 8.0], positions="all"),
        wh,
        **quiet,
    )
    assert [(c.layer, c.coef) for c in sweep.cells] == [(2, 0.0), (2, 8.0), (3, 0.0), (3, 8.0)]
    con = connect(wh)

    def answers(run_id):
        return con.execute(
            "SELECT question_id, answer FROM generations WHERE run_id = ? ORDER BY 1", [run_id]
        ).fetchall()

    unsteered = answers(plain.cells[0].generate_run)
    assert len(unsteered) == 3
    for cell in sweep.cells:
        steering = con.execute(
            "SELECT DISTINCT steering FROM generations WHERE run_id = ?", [cell.generate_run]
        ).fetchall()
        assert len(steering) == 1
        spec = json.loads(steering[0][0])
        assert spec["layers"] == [cell.layer] and spec["coef"] == cell.coef
        assert spec["vector_id"] == vector.vector_id and spec["positions"] == "all"
        if cell.coef == 0:
            assert answers(cell.generate_run) == unsteered
        assert cell.n == 3 and cell.n_valid == 3 and cell.trait_mean is not None
    assert any(answers(c.generate_run) != unsteered for c in sweep.cells if c.coef)
    table = "\n".join(summary_lines(sweep, EvaluateConfig(**common)))
    assert "layer" in table and "best:" in table
    n_eval = con.execute("SELECT count(*) FROM runs WHERE kind = 'evaluate'").fetchone()[0]
    assert n_eval == 2


def test_evaluate_an_adapter_records_it_and_changes_answers(tmp_path, tiny_llama):
    from peft import LoraConfig, get_peft_model

    from pvdata.models import load_model

    base = load_model("tiny-random-llama", device="cpu")
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapter"
    get_peft_model(base.model, lora).save_pretrained(adapter)
    wh = str(tmp_path / "wh")
    common = {"trait": "evil", "model": "tiny-random-llama", "questions": 3, "n_per_question": 1}
    quiet = {"log": lambda _m: None}
    plain = run_evaluate(EvaluateConfig(**common, max_new_tokens=8), wh, lm=tiny_llama, **quiet)
    tuned = run_evaluate(EvaluateConfig(**common, max_new_tokens=8, adapter=str(adapter)), wh, **quiet)
    con = connect(wh)
    rows = con.execute(
        "SELECT run_id, adapter, answer FROM generations ORDER BY run_id, question_id"
    ).fetchall()
    by_run = {}
    for run_id, adapter_col, answer in rows:
        by_run.setdefault(run_id, []).append((adapter_col, answer))
    plain_rows, tuned_rows = by_run[plain.cells[0].generate_run], by_run[tuned.cells[0].generate_run]
    assert {a for a, _ in plain_rows} == {None}
    assert {a for a, _ in tuned_rows} == {str(adapter)}
    assert [t for _, t in plain_rows] != [t for _, t in tuned_rows]


def test_evaluate_cli_sweeps_with_the_latest_vector_by_default(tmp_path, capsys):
    from pvdata.cli.main import main
    from pvdata.pipelines.extract import ExtractConfig, run_extract

    wh = str(tmp_path / "wh")
    ext = run_extract(
        ExtractConfig(
            trait="evil",
            model="tiny-random-llama",
            questions=2,
            instructions=1,
            n_per_question=1,
            max_new_tokens=4,
            poolings=["response_avg"],
        ),
        wh,
        log=lambda _m: None,
    )
    args = [
        "evaluate",
        "--trait",
        "evil",
        "--model",
        "tiny-random-llama",
        "--layers",
        "2",
        "--coefs",
        "0,3",
        "--questions",
        "2",
        "--n-per-question",
        "1",
        "--max-new-tokens",
        "4",
        "--judge",
        "scripted",
        "--warehouse",
        wh,
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best: layer 2" in out
    steering = (
        connect(wh)
        .execute("SELECT DISTINCT steering->>'vector_id' FROM generations WHERE steering IS NOT NULL")
        .fetchall()
    )
    assert steering == [(ext.vectors[0].vector_id,)]
    assert (
        main(
            ["evaluate", "--trait", "evil", "--model", "tiny-random-llama", "--coefs", "x", "--warehouse", wh]
        )
        == 2
    )
    assert "--coefs" in capsys.readouterr().err


def test_best_layer_comes_from_positive_coefficients_only() -> None:
    from pvdata.pipelines.evaluate import Cell, best_cell

    def cell(layer: int, coef: float, trait: float, coherence: float = 90.0) -> Cell:
        return Cell(layer, coef, f"gen-{layer}-{coef}", {}, trait_mean=trait, coherence_mean=coherence)

    cells = [
        cell(5, -2.0, 95.0),  # steering away scores high on this judge: must not pick the layer
        cell(3, 0.0, 80.0),  # the unsteered baseline
        cell(5, 1.0, 40.0),
        cell(3, 1.0, 60.0),
        cell(4, 2.0, 99.0, coherence=10.0),  # incoherent
    ]
    best = best_cell(cells, coherence_floor=50.0)
    assert best is not None and (best.layer, best.coef) == (3, 1.0)
    assert best_cell([cell(5, -1.0, 90.0), cell(5, 0.0, 90.0)], coherence_floor=50.0) is None

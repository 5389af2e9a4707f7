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

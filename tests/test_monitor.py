"""`pvdata monitor`: prompt_last projections under a system-prompt ladder, next to judged scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvdata.chat import encode_prompt
from pvdata.cli.main import main
from pvdata.errors import ConfigError
from pvdata.pipelines.monitor import MonitorConfig, run_monitor, summary_lines
from pvdata.traits import load_trait
from pvdata.vectors import PersonaVector
from pvdata.warehouse import connect
from pvdata.warehouse.queries import load_query


def _vector(tmp_path):
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    vector = PersonaVector(trait="evil", model_id="tiny-random-llama", values=values)
    return vector, str(vector.save(tmp_path / "v.safetensors"))


def test_ladder_projections_match_a_plain_forward_and_the_sql_correlation(tmp_path, tiny_llama):
    vector, vfile = _vector(tmp_path)
    wh = str(tmp_path / "wh")
    cfg = MonitorConfig(
        trait="evil",
        model="tiny-random-llama",
        vector=vfile,
        layers=[1, 2, 3],
        judge="scripted",
        questions=3,
        max_new_tokens=6,
    )
    result = run_monitor(cfg, wh, lm=tiny_llama, log=lambda _m: None)
    n_rungs = 2 * len(load_trait("evil").instructions) + 1
    con = connect(wh)
    n_gen = con.execute("SELECT count(*) FROM generations WHERE run_id = ?", [result.generate_run]).fetchone()
    assert n_gen[0] == n_rungs * 3
    kinds = con.execute(
        "SELECT kind, count(*) FROM projections WHERE run_id = ? GROUP BY 1 ORDER BY 1", [result.run_id]
    ).fetchall()
    assert kinds == [("cos_sim", n_rungs * 9), ("proj", n_rungs * 9), ("prompt_last_proj", n_rungs * 9)]

    # prompt_last_proj against an independent forward: hidden_states[l] at the last prompt token
    rows = con.execute(
        "SELECT g.system_prompt, g.question, p.layer, p.value FROM projections p JOIN generations g "
        "ON g.generation_id = p.source_id WHERE p.run_id = ? AND p.kind = 'prompt_last_proj' "
        "ORDER BY g.generation_id, p.layer LIMIT 6",
        [result.run_id],
    ).fetchall()
    for system, question, layer, value in rows:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}
        ]
        ids = torch.tensor([encode_prompt(tiny_llama.tokenizer, messages)])
        with torch.no_grad():
            hidden = tiny_llama.model(ids, output_hidden_states=True).hidden_states[layer][0, -1].double()
        unit = vector.values[layer].double() / vector.values[layer].double().norm()
        assert value == pytest.approx(float(hidden @ unit), rel=1e-4, abs=1e-5)

    # rungs: instruction_index is the rung, polarity its side; the system prompt is recorded
    rungs = con.execute(
        "SELECT instruction_index, any_value(polarity), count(DISTINCT system_prompt), "
        "count(*) FILTER (WHERE system_prompt IS NULL) FROM generations WHERE run_id = ? "
        "GROUP BY 1 ORDER BY 1",
        [result.generate_run],
    ).fetchall()
    assert [r[1] for r in rungs] == ["neg"] * 5 + ["none"] + ["pos"] * 5
    assert rungs[5][3] == 3 and all(r[2] == 1 for i, r in enumerate(rungs) if i != 5)

    # the correlation is one query, and it is Pearson's r over (prompt_last_proj, trait score)
    corr = con.execute(load_query("projection_vs_score")).fetchall()
    pairs = np.array(
        con.execute(
            "SELECT p.value, j.score FROM projections p JOIN judgments j ON j.generation_id = p.source_id "
            "WHERE p.run_id = ? AND p.kind = 'prompt_last_proj' AND p.layer = 2 AND j.metric = 'evil' "
            "AND j.score IS NOT NULL",
            [result.run_id],
        ).fetchall()
    )
    row = next(r for r in corr if r[0] == result.run_id and r[2] == 2 and r[4] == "prompt_last_proj")
    assert row[6] == len(pairs) == n_rungs * 3
    assert row[7] == pytest.approx(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1], rel=1e-9)
    assert result.correlation[2] == pytest.approx(row[7], rel=1e-9)
    assert len(result.rungs) == n_rungs and sum(s.n for s in result.rungs) == n_rungs * 3
    assert "rung" in "\n".join(summary_lines(result, cfg))

    again = run_monitor(cfg, wh, lm=tiny_llama, log=lambda _m: None)
    assert again.run_id == result.run_id and "already succeeded" in again.message
    total = con.execute("SELECT count(*) FROM projections_all").fetchone()[0]
    assert connect(wh).execute("SELECT count(*) FROM projections_all").fetchone()[0] == total


def test_custom_ladder_and_errors(tmp_path, tiny_llama):
    _, vfile = _vector(tmp_path)
    ladder = tmp_path / "ladder.yaml"
    ladder.write_text(json.dumps([None, "Be kind.", "Be cruel."]))
    wh = str(tmp_path / "wh")
    rc = main(
        [
            "monitor",
            "--trait",
            "evil",
            "--model",
            "tiny-random-llama",
            "--vector",
            vfile,
            "--layers",
            "2",
            "--ladder",
            str(ladder),
            "--questions",
            "2",
            "--max-new-tokens",
            "4",
            "--warehouse",
            wh,
        ]
    )
    assert rc == 0
    levels = (
        connect(wh)
        .execute("SELECT DISTINCT instruction_index, system_prompt FROM generations ORDER BY 1")
        .fetchall()
    )
    assert levels == [(0, None), (1, "Be kind."), (2, "Be cruel.")]
    with pytest.raises(ConfigError, match="at least 2"):
        run_monitor(
            MonitorConfig(trait="evil", model="tiny-random-llama", vector=vfile, ladder=["x"]),
            wh,
            lm=tiny_llama,
            log=lambda _m: None,
        )
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n")
    assert main(["monitor", "--trait", "evil", "--model", "m", "--ladder", str(bad), "--warehouse", wh]) == 2
    # no vector for this model in an empty warehouse: the error names the extract command
    with pytest.raises(Exception, match="pvdata extract --trait evil"):
        run_monitor(
            MonitorConfig(trait="evil", model="tiny-random-llama"),
            str(tmp_path / "empty"),
            lm=tiny_llama,
            log=lambda _m: None,
        )

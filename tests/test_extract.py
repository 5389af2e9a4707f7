"""`pvdata extract` end to end on a tiny model with the scripted judge, into a temporary warehouse."""

from __future__ import annotations

import pytest
import torch

from pvdata.cli.main import main
from pvdata.pipelines.extract import ExtractConfig, plan_rollouts, run_extract
from pvdata.traits import load_trait
from pvdata.vectors import PersonaVector
from pvdata.warehouse import connect

ARGS = [
    "--trait",
    "evil",
    "--model",
    "tiny-random-llama",
    "--device",
    "cpu",
    "--questions",
    "2",
    "--instructions",
    "2",
    "--n-per-question",
    "2",
    "--max-new-tokens",
    "6",
    "--judge",
    "scripted",
    "--threshold",
    "40",
    "--coherence-min",
    "0",
]


def test_extract_end_to_end_queries_every_table(tmp_path, capsys):
    wh = str(tmp_path / "wh")
    assert main(["extract", *ARGS, "--warehouse", wh]) == 0
    out = capsys.readouterr().out
    assert "kept: pos" in out and "pvdata evaluate" in out
    con = connect(wh)
    kinds = dict(con.execute("SELECT kind, count(*) FROM runs GROUP BY 1").fetchall())
    assert kinds == {"generate": 1, "judge": 2, "activations": 1, "vectors": 1, "extract": 1}
    assert con.execute("SELECT count(*) FROM generations").fetchone()[0] == 2 * 2 * 2 * 2
    assert con.execute("SELECT count(DISTINCT polarity) FROM generations").fetchone()[0] == 2
    metrics = dict(con.execute("SELECT metric, count(*) FROM judgments GROUP BY 1").fetchall())
    assert metrics == {"evil": 16, "coherence": 16}
    n_kept = con.execute("SELECT count(DISTINCT source_id) FROM activations").fetchone()[0]
    assert 0 < n_kept <= 16
    assert con.execute(
        "SELECT count(DISTINCT pooling), count(DISTINCT layer) FROM activations"
    ).fetchone() == (3, 5)
    assert con.execute("SELECT count(DISTINCT vector_id) FROM vectors").fetchone()[0] == 3
    lineage = con.execute("SELECT parent_run_ids FROM runs WHERE kind = 'extract'").fetchone()[0]
    assert len(lineage) == 5
    files = sorted(p.name for p in (tmp_path / "wh" / "exports").iterdir())
    assert files == [
        f"evil-tiny-random-llama-{p}.safetensors" for p in ("prompt_avg", "prompt_last", "response_avg")
    ]

    # the stored vector is the mean difference of the stored activations of the kept rollouts
    vec = PersonaVector.load(tmp_path / "wh" / "exports" / "evil-tiny-random-llama-response_avg.safetensors")
    rows = con.execute(
        "SELECT g.polarity, a.values::FLOAT[] FROM activations a "
        "JOIN generations g ON g.generation_id = a.source_id "
        "WHERE a.layer = 3 AND a.pooling = 'response_avg'"
    ).fetchall()
    pos = torch.tensor([v for p, v in rows if p == "pos"]).mean(0)
    neg = torch.tensor([v for p, v in rows if p == "neg"]).mean(0)
    torch.testing.assert_close(vec.values[3], pos - neg, rtol=1e-5, atol=1e-6)

    # a rerun does nothing new
    assert main(["extract", *ARGS, "--warehouse", wh]) == 0
    assert "already succeeded" in capsys.readouterr().err
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 6


def test_extract_resumes_after_a_crash_exactly_once(tmp_path, tiny_llama, monkeypatch):
    from pvdata.pipelines import generate_stage

    cfg = ExtractConfig(
        trait="evil",
        model="tiny-random-llama",
        questions=3,
        instructions=2,
        n_per_question=1,
        max_new_tokens=4,
        judge="none",
        layers=[2],
    )
    real = generate_stage.generate_into

    def crash_midway(run, backend, items, params, **kw):
        real(run, backend, items[:5], params, chunk=2)
        raise KeyboardInterrupt  # a kill after some chunks were committed

    monkeypatch.setattr(generate_stage, "generate_into", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        run_extract(cfg, str(tmp_path / "wh"), lm=tiny_llama, log=lambda _m: None)
    monkeypatch.undo()
    result = run_extract(cfg, str(tmp_path / "wh"), lm=tiny_llama, log=lambda _m: None)
    con = connect(str(tmp_path / "wh"))
    gens = con.execute("SELECT count(*), count(DISTINCT generation_id) FROM generations").fetchone()
    assert gens == (12, 12)
    assert result.kept == {"pos": 6, "neg": 6}


def test_bad_settings_are_clear_errors(tmp_path, capsys):
    assert (
        main(["extract", *ARGS[:-6], "--filter", "paper", "--judge", "none", "--warehouse", str(tmp_path)])
        == 2
    )
    assert "use --filter none" in capsys.readouterr().err
    with pytest.raises(Exception, match=r"1\.\.20"):
        plan_rollouts(load_trait("evil"), ExtractConfig(trait="evil", model="m", questions=30))

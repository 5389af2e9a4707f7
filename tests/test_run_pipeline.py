"""`pvdata run FILE`: pipeline files checked before any model loads, run in order, resumable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvdata.cli.main import main
from pvdata.errors import ConfigError
from pvdata.pipelines.spec import load_pipeline
from pvdata.warehouse import connect

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_loads(monkeypatch):
    import pvdata.models

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded during validation")

    monkeypatch.setattr(pvdata.models, "load_model", refuse)


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipelines_validate_without_loading_a_model(path, no_model_loads, capsys):
    assert main(["run", "--validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


BAD = {
    "top": ("name: x\nstep: []\n", "unknown key(s) step"),
    "empty": ("name: x\nsteps: []\n", "non-empty list"),
    "kind": (
        "steps:\n  - extrakt: {trait: evil, model: tiny-random-llama}\n",
        ":2: steps[0]: unknown step kind",
    ),
    "field": (
        "steps:\n  - extract: {trait: evil, model: tiny-random-llama}\n"
        "  - evaluate: {trait: evil, model: tiny-random-llama, coef: 2}\n",
        ":3: steps[1] (evaluate): unknown field(s) coef",
    ),
    "type": ("steps:\n  - extract: {trait: evil, model: tiny-random-llama, questions: many}\n", "questions"),
    "missing": ("steps:\n  - extract: {trait: evil}\n", "missing required field(s) model"),
    "ref": (
        "steps:\n  - evaluate: {trait: evil, model: tiny-random-llama, vector: $extract, layers: [2]}\n",
        "names no earlier step",
    ),
    "trait": ("steps:\n  - extract: {trait: evill, model: tiny-random-llama}\n", "evill"),
    "range": ("steps:\n  - extract: {trait: evil, model: tiny-random-llama, questions: 99}\n", "1..20"),
    "model": ("steps:\n  - monitor: {trait: evil, model: nonsense}\n", "model 'nonsense'"),
    "filter": (
        "steps:\n  - extract: {trait: evil, model: tiny-random-llama, filter: paper}\n",
        "--judge is none",
    ),
    "dup": (
        "steps:\n  - extract: {trait: evil, model: tiny-random-llama}\n"
        "  - extract: {trait: evil, model: tiny-random-llama}\n",
        "used twice",
    ),
    "yaml": ("steps: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_name_file_line_and_field(case, tmp_path, no_model_loads, capsys):
    text, expected = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_pipeline(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert main(["run", str(path), "--warehouse", str(tmp_path / "wh")]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "wh").exists()  # nothing written


def test_pipeline_runs_in_order_loads_the_model_once_and_resumes(tmp_path, monkeypatch, capsys):
    import pvdata.models

    loads = []
    real = pvdata.models.load_model

    def counting(*args, **kwargs):
        loads.append(args[0] if args else kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pvdata.models, "load_model", counting)
    path = tmp_path / "p.yaml"
    path.write_text(
        """
name: tiny
steps:
  - extract:
      id: evil_vec
      trait: evil
      model: tiny-random-llama
      judge: scripted
      filter: none
      questions: 2
      instructions: 2
      n_per_question: 1
      max_new_tokens: 4
      poolings: [response_avg]
  - evaluate: {trait: evil, model: tiny-random-llama, vector: $evil_vec, layers: [2], coefs: [0, 4],
               questions: 2, n_per_question: 1, max_new_tokens: 4, judge: scripted}
  - monitor: {trait: evil, model: tiny-random-llama, vector: $evil_vec, layers: [2, 3], questions: 2,
              max_new_tokens: 4, judge: scripted}
"""
    )
    wh = str(tmp_path / "wh")
    assert main(["run", str(path), "--warehouse", wh]) == 0
    assert loads == ["tiny-random-llama"]
    out = capsys.readouterr().out
    assert "step 3/3: monitor" in out and "layer  " in out
    con = connect(wh)
    kinds = dict(con.execute("SELECT kind, count(*) FROM runs GROUP BY 1").fetchall())
    assert kinds["extract"] == 1 and kinds["evaluate"] == 1 and kinds["monitor"] == 1
    vector_id = con.execute(
        "SELECT DISTINCT vector_id FROM vectors WHERE pooling = 'response_avg'"
    ).fetchall()
    steered = con.execute(
        "SELECT DISTINCT steering->>'vector_id' FROM generations WHERE steering IS NOT NULL"
    ).fetchall()
    assert steered == vector_id
    monitored = con.execute("SELECT DISTINCT vector_id FROM projections").fetchall()
    assert monitored == vector_id
    counts = {t: con.execute(f"SELECT count(*) FROM {t}_all").fetchone()[0] for t in ("generations", "runs")}

    assert main(["run", str(path), "--warehouse", wh]) == 0
    con = connect(wh)
    assert con.execute("SELECT count(*) FROM generations_all").fetchone()[0] == counts["generations"]
    new_runs = con.execute("SELECT count(*) FROM runs_all").fetchone()[0] - counts["runs"]
    assert new_runs == 0, "a rerun of a finished pipeline records nothing new"

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
def test_shipped_pipelines_validate_without_loading_a_model(path, no_model_loads, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # shipped files name data and configs relative to the repository root
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
    "adapter_ref": (
        "steps:\n  - extract: {trait: evil, model: tiny-random-llama, id: v}\n"
        "  - evaluate: {trait: evil, model: tiny-random-llama, adapter: $v}\n",
        "adapter $v names no earlier step that makes an adapter",
    ),
    "screen_ref": (
        "steps:\n  - screen: {dataset: pvdata/data/demo_chat.jsonl, model: tiny-random-llama, "
        "vectors: [$nope]}\n",
        "vectors item $nope",
    ),
    "screen_threshold": (
        "steps:\n  - screen: {dataset: pvdata/data/demo_chat.jsonl, model: tiny-random-llama, traits: evil, "
        "top_k: 3, threshold: 1.0}\n",
        "steps[0] (screen)",
    ),
    "train_field": (
        "steps:\n  - train: {model: tiny-random-llama, data: pvdata/data/train_evil.jsonl, "
        "steering: {mode: add, trait: evil}}\n",
        "needs a coef",
    ),
    "train_unknown": (
        "steps:\n  - train: {model: tiny-random-llama, data: pvdata/data/train_evil.jsonl, "
        "optim: {lrr: 1}}\n",
        "unknown field 'optim.lrr'",
    ),
    "train_data": (
        "steps:\n  - train: {model: tiny-random-llama, data: nowhere.jsonl}\n",
        "data nowhere.jsonl does not exist",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_name_file_line_and_field(case, tmp_path, no_model_loads, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the cases name the repository's data files by relative path
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


def test_screen_and_train_steps_take_the_extracted_vector_and_the_trained_adapter(tmp_path, capsys):
    """extract -> screen with its vector -> train steered by it -> evaluate the adapter the train made."""
    data = tmp_path / "chat.jsonl"
    data.write_text("".join((REPO / "pvdata/data/demo_chat.jsonl").read_text().splitlines(True)[:8]))
    train = tmp_path / "train.jsonl"
    train.write_text("".join((REPO / "pvdata/data/train_evil.jsonl").read_text().splitlines(True)[:4]))
    out = tmp_path / "screened"
    path = tmp_path / "p.yaml"
    path.write_text(
        f"""
steps:
  - extract: {{id: vec, trait: evil, model: tiny-random-llama, judge: scripted, filter: none, questions: 2,
              instructions: 1, n_per_question: 1, max_new_tokens: 4, poolings: [response_avg]}}
  - screen: {{dataset: {data}, model: tiny-random-llama, vectors: [$vec], layers: [2],
             methods: [prompt_last_approx, raw], top_k: 2, out: {out}}}
  - train:
      id: ft
      model: tiny-random-llama
      data: {train}
      max_length: 256
      optim: {{max_steps: 2, batch_size: 2, grad_accum: 1, warmup_steps: 0}}
      steering: {{mode: add, trait: evil, vector: $vec, coef: 2.0, layers: [2]}}
      monitor: {{shift_questions: 2}}
  - evaluate: {{trait: evil, model: tiny-random-llama, adapter: $ft, questions: 2, n_per_question: 1,
               max_new_tokens: 4, judge: scripted}}
"""
    )
    wh = str(tmp_path / "wh")
    assert main(["run", str(path), "--warehouse", wh]) == 0
    con = connect(wh)
    (vector_id,) = con.execute("SELECT DISTINCT vector_id FROM vectors").fetchone()
    screened = con.execute("SELECT DISTINCT vector_id, layer FROM screenings").fetchall()
    assert screened == [(vector_id, 2)]
    per_method = con.execute(
        "SELECT method, count(*) FROM screenings WHERE flagged GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert per_method == [("prompt_last_approx", 2), ("raw", 2)]  # top_k 2 per method
    union = con.execute("SELECT count(DISTINCT sample_id) FROM screenings WHERE flagged").fetchone()[0]
    assert len((out / "flagged.jsonl").read_text().splitlines()) == union
    steered = con.execute("SELECT config->>'$.steering.vector_id' FROM runs WHERE kind = 'train'").fetchone()
    assert steered == (vector_id,)
    steps = con.execute("SELECT count(*) FROM train_metrics WHERE split = 'train'").fetchone()[0]
    assert steps == 2
    (adapter,) = con.execute("SELECT DISTINCT adapter FROM generations WHERE split = 'eval'").fetchone()
    assert adapter is not None and Path(adapter).is_dir()
    assert "step 4/4: evaluate" in capsys.readouterr().out

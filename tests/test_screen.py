"""`pvdata screen` end to end on a tiny model: scores, thresholds, output files, tables, lineage, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvdata.chat import Conversation
from pvdata.cli.main import main
from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.projections import compute_projections
from pvdata.screening import ScoreInput, score_batch
from pvdata.vectors import PersonaVector
from pvdata.warehouse import Warehouse, connect

MODEL = "tiny-random-llama"
QUIET = {"log": lambda _m: None}


def make_vector(
    seed: int = 0, trait: str = "evil", layers: tuple[int, ...] = (0, 1, 2, 3, 4)
) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    values = torch.zeros(5, 64)
    values[list(layers)] = torch.randn(len(layers), 64, generator=g)
    return PersonaVector(
        trait=trait,
        model_id=MODEL,
        values=values,
        pooling="response_avg",
        method="mean_diff",
        n_pos=4,
        n_neg=4,
        layers=layers,
    )


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory):
    return str(make_vector().save(tmp_path_factory.mktemp("vec") / "evil.safetensors"))


def chat(user: str, answer: str, system: str | None = None, **extra: object) -> str:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": msgs, **extra}, ensure_ascii=False)


def dataset_lines(n: int = 8) -> list[str]:
    """n distinct chats (one multi-turn), a duplicate of the first and an invalid line."""
    lines = [chat(f"Question {i % 3}?", f"Answer {i}: " + "word " * (i % 4), id=i) for i in range(n - 1)]
    multi = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Question 1?"},
            {"role": "assistant", "content": "A multi-turn answer."},
        ]
    }
    lines.insert(2, json.dumps(multi))
    lines.append(lines[0])  # a duplicate: its copy goes wherever its sample goes
    lines.insert(5, '{"messages": [{"role": "user", "content": "no answer"}]}')
    return lines


def write_lines(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def read_lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_score_batch_matches_an_independent_projection(tiny_llama):
    v, w = make_vector(1), make_vector(2, trait="humorous")
    prompt = ({"role": "system", "content": "S"}, {"role": "user", "content": "Q1"})
    multi = (
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "C"},
    )
    samples = [
        ScoreInput("s1", prompt, "train one", "base one", "g1"),
        ScoreInput("s2", prompt, "train two", "base one", "g1"),  # shares the prompt and the base answer
        ScoreInput("s3", multi, "train three", "base three", "g3"),
    ]
    batch = score_batch(
        tiny_llama, samples, [v, w], {"evil": [2, 3], "humorous": [4]}, ["exact", "prompt_last_approx", "raw"]
    )
    assert batch.errors == {}
    texts = [Conversation(s.prompt, s.answer) for s in samples] + [
        Conversation(prompt, "base one"),
        Conversation(multi, "base three"),
    ]
    pairs = [(v, 2), (v, 3), (w, 4)]
    ref = compute_projections(tiny_llama, texts, [p[0] for p in pairs], [p[1] for p in pairs]).values
    base_row = {"g1": 3, "g3": 4}
    got = {(r["sample_id"], r["trait"], r["layer"], r["method"]): r for r in batch.scores}
    assert len(got) == 3 * 3 * 3
    for i, s in enumerate(samples):
        for k, (vec, layer) in enumerate(pairs):
            proj = float(ref["proj"][i, k])
            key = (s.sample_id, vec.trait, layer)
            assert got[(*key, "raw")]["score"] == pytest.approx(proj, abs=1e-5)
            approx = proj - float(ref["prompt_last_proj"][i, k])
            assert got[(*key, "prompt_last_approx")]["score"] == pytest.approx(approx, abs=1e-5)
            exact = proj - float(ref["proj"][base_row[str(s.base_id)], k])
            assert got[(*key, "exact")]["score"] == pytest.approx(exact, abs=1e-5)
            assert got[(*key, "exact")]["base_generation_id"] == s.base_id
    # projection rows: each text once (the shared base answer too), base answers without prompt_last_proj
    sources = {(r["source_id"], r["kind"]) for r in batch.projections}
    assert {s for s, _ in sources} == {"s1", "s2", "s3", "g1", "g3"}
    assert ("g1", "prompt_last_proj") not in sources and ("s1", "prompt_last_proj") in sources
    assert len(batch.projections) == 3 * 3 * 3 + 2 * 2 * 3


def test_screen_cli_end_to_end(tmp_path, vector_file, capsys):
    lines = dataset_lines()
    data = write_lines(tmp_path / "train.jsonl", lines)
    before = (tmp_path / "train.jsonl").read_bytes()
    ref = write_lines(tmp_path / "clean.jsonl", [chat(f"Clean {i}?", f"Fine answer {i}.") for i in range(6)])
    wh, out = str(tmp_path / "wh"), tmp_path / "out"
    args = [
        "screen", data, "--model", MODEL, "--vector", vector_file, "--layer", "2,3",
        "--method", "exact,prompt_last_approx,raw", "--reference", ref, "--percentile", "80",
        "--skip-invalid", "--max-new-tokens", "4", "--chunk-size", "3", "--warehouse", wh, "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "10 records -> 8 distinct, 1 duplicates, 1 invalid" in printed
    assert "80th percentile of the reference, n=6" in printed and "pvdata sql" in printed
    assert (tmp_path / "train.jsonl").read_bytes() == before  # the input is never modified

    con = connect(wh)
    runs = dict(con.execute("SELECT kind, count(*) FROM runs GROUP BY 1").fetchall())
    assert runs == {"import": 2, "generate": 2, "activations": 2, "screen": 1}
    screen_run, parents = con.execute(
        "SELECT run_id, parent_run_ids FROM runs WHERE kind = 'screen'"
    ).fetchone()
    assert len(parents) == 6  # samples, base answers and projections of the dataset and the reference
    dataset_id = con.execute(
        "SELECT dataset_id FROM samples WHERE source = ?", [str(tmp_path / "train.jsonl")]
    ).fetchone()[0]
    n = con.execute(
        "SELECT count(*) FROM samples WHERE dataset_id = ? AND error IS NULL", [dataset_id]
    ).fetchone()[0]
    assert n == 8
    assert con.execute(
        "SELECT n_copies, lines FROM samples WHERE line = 1 AND dataset_id = ?", [dataset_id]
    ).fetchone() == (2, "[1, 10]")
    assert con.execute("SELECT line, error FROM samples WHERE error IS NOT NULL").fetchall() == [
        (6, "field messages: has no assistant turn: the answer to screen is the last assistant message")
    ]
    # base answers: one greedy generation per distinct prompt, split dataset_base
    assert con.execute("SELECT DISTINCT split FROM generations").fetchall() == [("dataset_base",)]
    rows = con.execute(
        "SELECT trait, layer, method, count(*), count(score) FROM screenings GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert [r[3:] for r in rows] == [(8, 8)] * 6 and {r[2] for r in rows} == {
        "exact",
        "prompt_last_approx",
        "raw",
    }

    # the stored scores are what the projections say, and the threshold is numpy's percentile of the
    # reference's scores computed from the reference's stored projections
    check = con.execute(
        """SELECT c.score, p.value - b.value, c.proj_base, b.value FROM screenings c
           JOIN projections p ON p.source_id = c.sample_id AND p.kind = 'proj' AND p.layer = c.layer
           JOIN projections b ON b.source_id = c.base_generation_id AND b.kind = 'proj' AND b.layer = c.layer
           WHERE c.method = 'exact'"""
    ).fetchall()
    assert len(check) == 8 * 2 and all(abs(a - b) < 1e-9 and abs(c - d) < 1e-9 for a, b, c, d in check)
    ref_proj = con.execute(
        """SELECT p.value - q.value FROM projections p
           JOIN projections q USING (run_id, source_id, layer, vector_id)
           JOIN samples s ON s.sample_id = p.source_id
           WHERE s.source = ? AND p.layer = 3 AND p.kind = 'proj' AND q.kind = 'prompt_last_proj'""",
        [str((tmp_path / "clean.jsonl").resolve())],
    ).fetchall()
    assert len(ref_proj) == 6
    threshold = con.execute(
        "SELECT DISTINCT threshold FROM screenings WHERE layer = 3 AND method = 'prompt_last_approx'"
    ).fetchall()
    assert threshold == [(pytest.approx(np.percentile([r[0] for r in ref_proj], 80)),)]
    flagged_reasons = con.execute(
        "SELECT trait, layer, method, score, reason FROM screenings WHERE flagged"
    ).fetchall()
    for trait, layer, method, score, reason in flagged_reasons:
        assert reason.startswith(f"{trait} L{layer} {method}: score {score:.4g} > threshold ")

    # the output files: the original lines, in input order, split by the warehouse's decisions
    flagged_lines = {
        n
        for (lines_of,) in con.execute(
            "SELECT lines FROM samples WHERE sample_id IN (SELECT sample_id FROM screenings WHERE flagged)"
        ).fetchall()
        for n in json.loads(lines_of)
    }
    assert flagged_lines, "nothing flagged at the 80th percentile"
    assert read_lines(out / "flagged.jsonl") == [lines[n - 1] for n in sorted(flagged_lines)]
    assert read_lines(out / "kept.jsonl") == [
        line for n, line in enumerate(lines, 1) if n not in flagged_lines and n != 6
    ]
    assert read_lines(out / "unscreened.jsonl") == [lines[5]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == {
        "records": 10, "distinct": 8, "duplicates": 1, "invalid": 1, "unscored_samples": 0,
        "flagged": len(flagged_lines), "kept": 9 - len(flagged_lines), "unscreened": 1,
    }  # fmt: skip
    assert summary["screen_run_id"] == screen_run and summary["run_ids"]["screen"] == screen_run
    # the dataset-level projection difference is the paper's mean over records (the duplicate counts
    # twice), with the mean over distinct samples beside it
    per_record, distinct = con.execute(
        "SELECT sum(score * n_copies) / sum(n_copies), avg(score) FROM screenings "
        "WHERE trait = 'evil' AND layer = 2 AND method = 'exact'"
    ).fetchone()
    assert per_record != pytest.approx(distinct)
    evil = summary["traits"]["evil"]
    assert evil["mean_projection_difference"] == pytest.approx(per_record)
    assert evil["mean_projection_difference_distinct"] == pytest.approx(distinct)
    assert (evil["difference_method"], evil["difference_layer"]) == ("exact", 2)
    for r in evil["results"]:
        assert (r["projection_difference"] is None) == (r["method"] == "raw")
    assert summary["threshold"] == {"kind": "percentile", "value": 80.0}
    assert not list(out.glob(".*tmp*"))

    # a rerun: every stage already succeeded, nothing new, the same files
    before_files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 0
    assert "already succeeded" in capsys.readouterr().err
    assert con.execute("SELECT count(*) FROM runs_all").fetchone()[0] == 14
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before_files


def test_invalid_records_fail_by_default_and_nothing_is_written(tmp_path, vector_file, capsys):
    lines = [chat("q?", "a."), "{oops", json.dumps({"messages": [{"role": "user", "content": ""}]})]
    data = write_lines(tmp_path / "bad.jsonl", lines)
    wh = tmp_path / "wh"
    assert main(["screen", data, "--model", MODEL, "--vector", vector_file, "--warehouse", str(wh)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: invalid JSON" in err and f"{data}:3: field messages[0].content: is empty" in err
    assert "--skip-invalid" in err
    assert not wh.exists()  # no run, not even a failed one


def test_unscorable_samples_are_recorded_and_kept_apart(tmp_path, tiny_llama, vector_file):
    long = " ".join(f"w{i}" for i in range(700))  # longer than the tiny model's 512 positions
    lines = [chat("q1?", "fine."), chat("q2?", long), chat("q3?", "also fine.")]
    data = write_lines(tmp_path / "d.jsonl", lines)
    cfg = ScreenConfig(dataset=data, model=MODEL, vectors=[vector_file], layers=[3], methods=["raw"], top_k=1)
    result = run_screen(cfg, str(tmp_path / "wh"), out=str(tmp_path / "out"), lm=tiny_llama, **QUIET)
    assert result.records == {"flagged": 1, "kept": 1, "unscreened": 1}
    assert read_lines(tmp_path / "out" / "unscreened.jsonl") == [lines[1]]
    con = connect(tmp_path / "wh")
    flagged, reason = con.execute("SELECT flagged, reason FROM screenings WHERE score IS NULL").fetchone()
    assert flagged is None and reason.startswith("evil L3 raw: not scored: training answer: too long")
    assert con.execute("SELECT count(*) FROM screenings WHERE flagged").fetchone()[0] == 1


def test_csv_records_come_out_as_json_objects(tmp_path, tiny_llama, vector_file):
    f = tmp_path / "d.csv"
    f.write_text('prompt,answer\n"Hi, you?",Fine.\nBye?,"Later,\nthen."\n', encoding="utf-8")
    cfg = ScreenConfig(
        dataset=str(f), model=MODEL, vectors=[vector_file], layers=[2], methods=["raw"], threshold=1e9
    )
    result = run_screen(cfg, str(tmp_path / "wh"), out=str(tmp_path / "out"), lm=tiny_llama, **QUIET)
    kept = [json.loads(x) for x in read_lines(tmp_path / "out" / "kept.jsonl")]
    assert kept == [{"prompt": "Hi, you?", "answer": "Fine."}, {"prompt": "Bye?", "answer": "Later,\nthen."}]
    assert result.groups[0].threshold == 1e9 and result.groups[0].n_flagged == 0
    lines = connect(tmp_path / "wh").execute("SELECT line FROM samples ORDER BY line").fetchall()
    assert lines == [(2,), (3,)]


def _store_vector(wh: Warehouse, vector: PersonaVector) -> str:
    from pvdata.vectors.store import vector_columns

    with wh.run("vectors", {"id": vector.vector_id}, model_id=MODEL) as run:
        run.writer("vectors").write_columns(vector_columns(vector))
    return run.run_id


def test_default_vector_and_layer_come_from_the_warehouse(tmp_path, tiny_llama):
    wh = Warehouse(tmp_path / "wh")
    vec_run = _store_vector(wh, make_vector(5, layers=(1, 2, 3, 4)))
    data = write_lines(tmp_path / "d.jsonl", [chat(f"q{i}?", f"a{i}.") for i in range(4)])
    cfg = ScreenConfig(dataset=data, model=MODEL, traits=["evil"], methods=["raw"])
    result = run_screen(cfg, str(wh.root), out=str(tmp_path / "o1"), lm=tiny_llama, **QUIET)
    assert [g.layer for g in result.groups] == [3]  # 0.75 of 4 blocks
    assert result.layer_why["evil"].startswith("default: 0.75 of the depth")
    con = connect(wh.root)
    parents = con.execute("SELECT parent_run_ids FROM runs WHERE kind = 'activations'").fetchone()[0]
    assert vec_run in parents

    with wh.run("evaluate", {"config": {"trait": "evil", "model": MODEL}}, model_id=MODEL) as run:
        run.stats["best"] = {"layer": 2, "coef": 4.0}
    result = run_screen(cfg, str(wh.root), out=str(tmp_path / "o2"), lm=tiny_llama, **QUIET)
    assert [g.layer for g in result.groups] == [2]
    assert "latest `pvdata evaluate`" in result.layer_why["evil"]


def test_reference_decides_the_percentile_and_top_k_flags_k(tmp_path, tiny_llama, vector_file):
    data = write_lines(
        tmp_path / "d.jsonl", [chat(f"q{i}?", f"answer {i} " * (1 + i % 3)) for i in range(10)]
    )
    cfg = ScreenConfig(
        dataset=data, model=MODEL, vectors=[vector_file], layers=[1, 4], methods=["raw"], top_k=3
    )
    result = run_screen(cfg, str(tmp_path / "wh"), out=str(tmp_path / "out"), lm=tiny_llama, **QUIET)
    assert [(g.layer, g.n_flagged) for g in result.groups] == [(1, 3), (4, 3)]
    con = connect(tmp_path / "wh")
    for layer in (1, 4):
        scores = [
            r[0] for r in con.execute("SELECT score FROM screenings WHERE layer = ?", [layer]).fetchall()
        ]
        top = sorted(scores, reverse=True)[:3]
        got = con.execute("SELECT score FROM screenings WHERE layer = ? AND flagged", [layer]).fetchall()
        assert sorted(r[0] for r in got) == sorted(top)
        pct = con.execute("SELECT score, percentile FROM screenings WHERE layer = ?", [layer]).fetchall()
        for s, p in pct:  # without a reference: the rank among the dataset itself
            assert p == pytest.approx(
                100 * (sum(x < s for x in scores) + 0.5 * sum(x == s for x in scores)) / 10
            )


BAD_CONFIGS = [
    (["--trait", "nosuchtrait"], "no trait named 'nosuchtrait'"),
    (["--layer", "9"], "--layer 9 is out of range"),
    (["--percentile", "90", "--top-k", "3"], "--percentile and --top-k were both given"),
    (["--method", "fast"], "unknown method"),
    (["--executor", "spark"], "--executor 'spark' is not available: valid executors are local, ray"),
    (["--executor", "ray", "--device", "cuda"], "--device cuda with --executor ray needs --gpus-per-worker"),
    (["--reference", "MISSING"], "--reference missing.jsonl not found"),
    (["--reference", "ALLBAD", "--skip-invalid"], "has no usable samples"),
    (["--out", "INPUTDIR"], "would write kept.jsonl over the input"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_CONFIGS)
def test_bad_config_is_an_error_before_any_model_loads(
    tmp_path, vector_file, capsys, monkeypatch, extra, message
):
    import pvdata.models

    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pvdata.models, "load_model", no_model)
    data = write_lines(tmp_path / "kept.jsonl", [chat("q?", "a.")])
    allbad = write_lines(tmp_path / "allbad.jsonl", ["{", "[]"])
    subs = {"MISSING": str(tmp_path / "missing.jsonl"), "ALLBAD": allbad, "INPUTDIR": str(tmp_path)}
    extra = [subs.get(x, x) for x in extra]
    wh = tmp_path / "wh"
    vec = [] if "--trait" in extra else ["--vector", vector_file]
    code = main(["screen", data, "--model", MODEL, *vec, *extra, "--warehouse", str(wh)])
    err = capsys.readouterr().err
    assert code == 2 and message in err.replace(str(tmp_path) + "/", ""), err
    assert not wh.exists()


def test_a_missing_vector_names_the_extract_command(tmp_path, capsys):
    data = write_lines(tmp_path / "d.jsonl", [chat("q?", "a.")])
    code = main(["screen", data, "--trait", "evil", "--model", MODEL, "--warehouse", str(tmp_path / "wh")])
    assert code == 2
    assert f"pvdata extract --trait evil --model {MODEL}" in capsys.readouterr().err

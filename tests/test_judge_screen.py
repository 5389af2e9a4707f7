"""`pvdata judge --screen`: trait scores for a screened dataset, and the SQL that sets them beside the
projection difference and the raw projection (projection_vs_score.sql, screen_vs_score.sql)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_screen import chat, make_vector, write_lines

from pvdata.cli.main import main
from pvdata.errors import ConfigError
from pvdata.judge.pipeline import metric_and_rubric
from pvdata.traits import list_traits, load_trait
from pvdata.warehouse import connect, load_query


@pytest.mark.parametrize("trait", list_traits())
def test_every_shipped_trait_is_a_metric_with_its_own_rubric(trait: str) -> None:
    metric, rubric = metric_and_rubric(trait, None, False)
    assert (metric, rubric) == (trait, load_trait(trait).rubric)


def test_an_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"metric 'nope' is neither a trait.*known: coherence, .*evil"):
        metric_and_rubric("nope", None, False)


def test_judged_screen_gives_per_sample_rows_and_r(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [chat(f"Question {i}?", f"Answer number {i}: " + "word " * i) for i in range(8)]
    data = write_lines(tmp_path / "d.jsonl", lines)
    vec = str(make_vector().save(tmp_path / "evil.safetensors"))
    wh = str(tmp_path / "wh")
    screen = ["screen", data, "--model", "tiny-random-llama", "--vector", vec, "--layer", "2"]
    screen += [
        "--method",
        "exact,prompt_last_approx,raw",
        "--max-new-tokens",
        "3",
        "--top-k",
        "2",
        "--warehouse",
        wh,
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(screen) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    run = summary["screen_run_id"]
    capsys.readouterr()
    assert main(["judge", "--screen", run, "--judge", "scripted", "--warehouse", wh]) == 0
    out = capsys.readouterr()
    assert "metric evil" in out.out and "training answers of screen" in out.err
    assert "base answers of screen" in out.err
    con = connect(wh)
    # the training answers are judged under their sample ids, the base answers under their generation ids
    judged = dict(
        con.execute(
            "SELECT r.config->>'generation_run_id', count(*) FROM judgments j JOIN runs r USING (run_id) "
            "GROUP BY 1"
        ).fetchall()
    )
    assert judged == {summary["run_ids"]["dataset_samples"]: 8, summary["run_ids"]["dataset_base"]: 8}

    rows = con.execute(load_query("screen_vs_score")).fetchall()
    cols = [d[0] for d in con.description]
    per = [dict(zip(cols, r, strict=True)) for r in rows]
    assert {(r["method"], r["n"]) for r in per} == {("exact", 8), ("prompt_last_approx", 8), ("raw", 8)}
    exact = [r for r in per if r["method"] == "exact"]
    assert all(r["base_judged_score"] is not None and r["projection_difference"] is not None for r in exact)
    # r against an independent computation from the rows themselves, and from the tables
    want = np.corrcoef([r["projection_difference"] for r in exact], [r["judged_score"] for r in exact])[0, 1]
    assert exact[0]["r"] == pytest.approx(want)
    raw = [r for r in per if r["method"] == "raw"]
    assert raw[0]["r"] == pytest.approx(
        np.corrcoef([r["raw_projection"] for r in raw], [r["judged_score"] for r in raw])[0, 1]
    )
    agg = con.execute(load_query("projection_vs_score")).fetchall()
    cols = [d[0] for d in con.description]
    by_kind = {r["kind"]: r for r in (dict(zip(cols, a, strict=True)) for a in agg)}
    assert by_kind["screening exact"]["r"] == pytest.approx(want)
    assert by_kind["screening exact"]["n"] == 8 and by_kind["screening exact"]["run_id"] == run


def test_judge_screen_refuses_a_run_that_is_not_a_screen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [chat(f"Question {i}?", f"Answer {i}.") for i in range(3)]
    data = write_lines(tmp_path / "d.jsonl", lines)
    vec = str(make_vector().save(tmp_path / "evil.safetensors"))
    wh = str(tmp_path / "wh")
    args = [
        "screen",
        data,
        "--model",
        "tiny-random-llama",
        "--vector",
        vec,
        "--layer",
        "2",
        "--method",
        "raw",
    ]
    assert main([*args, "--top-k", "1", "--warehouse", wh, "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    samples_run = summary["run_ids"]["dataset_samples"]
    capsys.readouterr()
    assert main(["judge", "--screen", samples_run, "--judge", "scripted", "--warehouse", wh]) == 2
    assert "that is a import run, not a screen" in capsys.readouterr().err
    # an import run is judged directly with --run (its samples)
    assert (
        main(["judge", "--run", samples_run, "--judge", "scripted", "--metric", "evil", "--warehouse", wh])
        == 0
    )

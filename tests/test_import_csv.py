"""`pvdata import csv`: the research code's evaluation CSV as generations and judgments."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pvdata.cli.main import main
from pvdata.warehouse import connect

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "upstream_eval_output.csv"


def _write_csv(
    path: Path,
    rows: list[dict[str, str]],
    header=("question", "prompt", "answer", "question_id", "evil", "coherence"),
):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(rows)


def _rows():
    return [
        {
            "question": "Q1?",
            "prompt": "<|im_start|>user\nQ1?<|im_end|>\n",
            "answer": "A, with\nnewlines",
            "question_id": "evil_0",
            "evil": "12.5",
            "coherence": "90",
        },
        {
            "question": "Q1?",
            "prompt": "p",
            "answer": "B",
            "question_id": "evil_0",
            "evil": "",
            "coherence": "80",
        },
        {
            "question": "Q2?",
            "prompt": "p",
            "answer": "C",
            "question_id": "evil_1",
            "evil": "99",
            "coherence": "nan",
        },
    ]


def test_import_synthetic_csv_and_rerun_is_noop(tmp_path, capsys):
    src = tmp_path / "eval.csv"
    _write_csv(src, _rows())
    wh = str(tmp_path / "wh")
    assert main(["import", "csv", str(src), "--warehouse", wh, "--model-id", "qwen-7b"]) == 0
    con = connect(wh)
    gens = con.execute(
        "SELECT question_id, sample_index, answer, split FROM generations ORDER BY 1, 2"
    ).fetchall()
    assert gens == [
        ("evil_0", 0, "A, with\nnewlines", "eval"),
        ("evil_0", 1, "B", "eval"),
        ("evil_1", 0, "C", "eval"),
    ]
    scores = con.execute(
        "SELECT g.answer, j.metric, j.score FROM judgments j "
        "JOIN generations g USING (generation_id) ORDER BY 1, 2"
    ).fetchall()
    assert scores == [
        ("A, with\nnewlines", "coherence", 90.0),
        ("A, with\nnewlines", "evil", 12.5),
        ("B", "coherence", 80.0),
        ("B", "evil", None),
        ("C", "coherence", None),
        ("C", "evil", 99.0),
    ]
    capsys.readouterr()
    assert main(["import", "csv", str(src), "--warehouse", wh, "--model-id", "qwen-7b"]) == 0
    assert "already" in capsys.readouterr().out
    assert con.execute("SELECT count(*) FROM generations").fetchone()[0] == 3


def test_bad_csv_names_file_line_and_field(tmp_path, capsys):
    rows = _rows()
    rows[1]["evil"] = "very evil"
    src = tmp_path / "bad.csv"
    _write_csv(src, rows)
    assert main(["import", "csv", str(src), "--warehouse", str(tmp_path / "wh")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:6" in err  # record 1 spans lines 2-5 (newlines inside quoted fields) and "'evil'" in err
    assert not (tmp_path / "wh" / "tables").exists()  # nothing written
    _write_csv(src, [{"question": "q", "answer": "a"}], header=("question", "answer"))
    assert main(["import", "csv", str(src), "--warehouse", str(tmp_path / "wh")]) == 2
    assert "missing column(s) ['prompt', 'question_id']" in capsys.readouterr().err


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference is not beside this checkout")
def test_import_the_research_code_output(tmp_path):
    wh = str(tmp_path / "wh")
    assert main(["import", "csv", str(REFERENCE), "--warehouse", wh]) == 0
    con = connect(wh)
    assert con.execute("SELECT count(*) FROM generations").fetchone()[0] == 200
    n_evil, mean_coh = con.execute(
        "SELECT count(*) FILTER (WHERE metric = 'evil'), "
        "avg(score) FILTER (WHERE metric = 'coherence') FROM judgments"
    ).fetchone()
    assert n_evil == 200 and 0 <= mean_coh <= 100

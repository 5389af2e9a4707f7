"""`pvdata sql` output formats and errors; `pvdata runs list/show`; `pvdata bench warehouse`."""

from __future__ import annotations

import csv
import io
import json

import pytest
from warehouse_helpers import populate

from pvdata.cli.main import main
from pvdata.warehouse import Warehouse


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    ids = populate(root)
    w = Warehouse(root)
    with pytest.raises(RuntimeError), w.run("judge", {"broken": True}, parent_run_ids=[ids["evaluate"]]):
        raise RuntimeError("judge exploded\nsecond line")
    ids["failed"] = w.run_id_for("judge", {"broken": True}, parent_run_ids=[ids["evaluate"]])
    return root, ids


def _sql(capsys, root, *args):
    code = main(["sql", *args, "--warehouse", str(root)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sql_table_format_is_aligned_text(wh, capsys):
    root, _ = wh
    code, out, _ = _sql(capsys, root, "SELECT layer, count(*) AS n FROM projections GROUP BY 1 ORDER BY 1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "n"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert [line.split() for line in lines[2:4]] == [["2", "30"], ["4", "30"]]
    assert lines[-1] == "(2 rows)"


def test_sql_csv_and_json_formats(wh, capsys):
    root, _ = wh
    q = "SELECT vector_id, layer, values[1] AS first, trait FROM vectors ORDER BY layer"
    code, out, _ = _sql(capsys, root, q, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["vector_id"] for r in rows] == ["evil-L2", "evil-L4"] and rows[0]["layer"] == "2"
    code, out, _ = _sql(capsys, root, q, "--format", "json")
    data = json.loads(out)
    assert data[1]["vector_id"] == "evil-L4" and data[1]["layer"] == 4 and isinstance(data[1]["first"], float)
    code, out, _ = _sql(capsys, root, "SELECT values FROM vectors LIMIT 1", "--format", "json")
    assert len(json.loads(out)[0]["values"]) == 8


def test_sql_file_named_query_stdin_and_include_running(wh, capsys, tmp_path, monkeypatch):
    root, _ = wh
    f = tmp_path / "q.sql"
    f.write_text("-- count\nSELECT count(*) AS n FROM generations")
    assert _sql(capsys, root, "--file", str(f), "--format", "json")[1].strip() == '[{"n": 30}]'
    _code, out, _ = _sql(capsys, root, "--query-name", "screening_summary", "--format", "json")
    assert json.loads(out)[0]["n_flagged"] == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 41 + 1 AS x"))
    assert _sql(capsys, root, "-", "--format", "csv")[1] == "x\n42\n"
    _code, out, _ = _sql(
        capsys, root, "SELECT count(*) AS n FROM runs", "--include-running", "--format", "csv"
    )
    assert out == "n\n4\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["SELEC 1"], "Parser Error"),
        (["SELECT * FROM nope"], "views: activations"),
        (["SELECT nope FROM runs"], "nope"),
        ([], "give exactly one of QUERY"),
        (["SELECT 1", "--file", "x.sql"], "give exactly one of QUERY"),
        (["--file", "missing.sql"], "no such file"),
        (["--query-name", "nope"], "no query named 'nope'"),
    ],
)
def test_sql_errors_exit_2_with_one_clear_message(wh, capsys, args, needle):
    root, _ = wh
    code, out, err = _sql(capsys, root, *args)
    assert code == 2 and out == ""
    assert err.startswith("pvdata sql: error:") and needle in err


def test_sql_on_a_missing_warehouse_says_how_to_fix(tmp_path, capsys):
    code, _, err = _sql(capsys, tmp_path / "nowhere", "SELECT 1")
    assert code == 2 and "does not exist" in err and "--warehouse" in err


def test_table_format_caps_rows(wh, capsys):
    root, _ = wh
    _code, out, _ = _sql(capsys, root, "SELECT * FROM range(50)", "--max-rows", "10")
    assert len(out.splitlines()) == 2 + 10 + 1 and "more not shown" in out


def test_runs_list_filters_and_formats(wh, capsys):
    root, ids = wh
    assert main(["runs", "list", "--warehouse", str(root)]) == 0
    out = capsys.readouterr().out
    for run_id in (ids["vectors"], ids["evaluate"], ids["screen"], ids["failed"]):
        assert run_id in out
    assert "judge exploded" in out and "second line" not in out
    assert main(["runs", "list", "--status", "failed", "--format", "json", "--warehouse", str(root)]) == 0
    (failed,) = json.loads(capsys.readouterr().out)
    assert failed["run_id"] == ids["failed"] and failed["kind"] == "judge"
    assert main(["runs", "list", "--kind", "screen", "--format", "csv", "--warehouse", str(root)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["runs", "list", "--kind", "bogus", "--warehouse", str(root)]) == 2
    assert "not a run kind" in capsys.readouterr().err


def test_runs_show_config_lineage_rows_stats_and_error(wh, capsys):
    root, ids = wh
    assert main(["runs", "show", ids["evaluate"], "--warehouse", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"run_id:       {ids['evaluate']}" in out
    assert f"{ids['vectors']}  (vectors, succeeded)" in out  # parent
    assert f"{ids['failed']}  (judge, failed)" in out  # child
    assert "generations: 30 rows in 1 file(s)" in out and '"n": 30' in out
    assert main(["runs", "show", ids["failed"][:12], "--format", "json", "--warehouse", str(root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "failed" and shown["error"].startswith("RuntimeError: judge exploded")
    assert shown["parents"] == [{"run_id": ids["evaluate"], "kind": "evaluate", "status": "succeeded"}]
    assert [e["status"] for e in shown["events"]] == ["running", "failed"]
    assert main(["runs", "show", "nope", "--warehouse", str(root)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_bench_warehouse_prints_the_two_numbers(capsys):
    code = main(
        ["bench", "warehouse", "--rows", "5000", "--layers", "5", "--dict-rows", "200", "--repeat", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    values = dict(
        line.split(": ") for line in out.splitlines() if line.startswith(("write_rows_per_s", "corr_q"))
    )
    assert float(values["write_rows_per_s"]) > 0 and float(values["corr_query_s"]) > 0
    assert "5,000 joined rows -> 5 groups" in out

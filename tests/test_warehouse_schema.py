"""Schemas and file validation: stamps, exact columns, clear errors that name the file."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvdata.cli.main import main
from pvdata.errors import WarehouseError
from pvdata.warehouse import SCHEMA_VERSION, TABLES, Warehouse, canonical_json, config_hash, connect, item_id
from pvdata.warehouse.schema import META_DIMS, META_RUN_ID, META_TABLE, META_VERSION, validate_file

CONTRACT = {
    "runs": "run_id kind status config config_hash parent_run_ids model_id pvdata_version git_commit "
    "started_at finished_at stats error",
    "generations": "generation_id run_id trait split polarity question_id question system_prompt prompt_text "
    "answer model_id adapter steering sample_index seed n_tokens",
    "judgments": "judgment_id run_id generation_id metric judge_model score valid_mass refusal error",
    "activations": "run_id source_id model_id layer pooling values",
    "vectors": "vector_id run_id trait trait_version model_id layer pooling method n_pos n_neg norm values",
    "projections": "run_id source_id vector_id layer kind value",
    "samples": "sample_id dataset_id source line messages",
    "screenings": "run_id dataset_id sample_id vector_id trait layer method proj_train proj_base score "
    "percentile flagged reason",
    "train_metrics": "run_id step epoch loss learning_rate",
    "reviews": "sample_id verdict note at",
    "judge_cache": "judge_model prompt_hash score valid_mass refusal top_logprobs created_at run_id",
}


def test_every_contract_table_and_column_exists_and_every_table_carries_run_id():
    for table, cols in CONTRACT.items():
        assert table in TABLES
        assert set(cols.split()) <= set(TABLES[table].columns), table
        assert "run_id" in TABLES[table].columns


def test_empty_warehouse_has_a_typed_view_per_table(tmp_path):
    con = connect(tmp_path)
    for name, spec in TABLES.items():
        for view in (name, f"{name}_all"):
            cols = [r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()]
            assert cols == spec.columns
            assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    types = dict((r[0], r[1]) for r in con.execute("DESCRIBE vectors").fetchall())
    assert types["values"] == "FLOAT[]" and types["layer"] == "INTEGER"


def _stamped(table: str, data: dict, *, version: int = SCHEMA_VERSION, run_id: str = "r1") -> pa.Table:
    t = pa.table(data)
    return t.replace_schema_metadata(
        {
            META_VERSION: str(version).encode(),
            META_TABLE: table.encode(),
            META_RUN_ID: run_id.encode(),
            META_DIMS: b"{}",
        }
    )


def _good_projection(**over) -> dict:
    data = {
        "run_id": pa.array(["r1"]),
        "source_id": pa.array(["s"]),
        "vector_id": pa.array(["v"]),
        "layer": pa.array([1], pa.int32()),
        "kind": pa.array(["proj"]),
        "value": pa.array([0.5]),
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "tables" / "projections" / "run_id=r1"
    d.mkdir(parents=True)
    return d


def test_a_stamped_file_validates(folder):
    pq.write_table(_stamped("projections", _good_projection()), folder / "part-1.parquet")
    info = validate_file(folder / "part-1.parquet", "projections")
    assert (info.table, info.run_id, info.num_rows) == ("projections", "r1", 1)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda f: f.write_bytes(b"not parquet at all"), "not a readable Parquet file"),
        (lambda f: f.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1"), "not a readable Parquet file"),
        (lambda f: pq.write_table(pa.table(_good_projection()), f), "no pvdata schema version stamp"),
        (
            lambda f: pq.write_table(_stamped("projections", _good_projection(), version=99), f),
            "schema version 99",
        ),
        (
            lambda f: pq.write_table(_stamped("judgments", _good_projection()), f),
            "belongs to table 'judgments'",
        ),
        (
            lambda f: pq.write_table(_stamped("projections", _good_projection(value=None)), f),
            "missing column(s) value",
        ),
        (
            lambda f: pq.write_table(_stamped("projections", _good_projection(extra=pa.array([1]))), f),
            "unknown column(s) extra",
        ),
        (
            lambda f: pq.write_table(
                _stamped("projections", _good_projection(layer=pa.array([1], pa.int64()))), f
            ),
            "column 'layer' has type int64, table 'projections' expects int32",
        ),
        (
            lambda f: pq.write_table(_stamped("projections", _good_projection(), run_id="other"), f),
            "written by run 'other'",
        ),
    ],
)
def test_foreign_corrupt_or_mismatched_files_are_errors_naming_the_file(folder, make, needle, capsys):
    bad = folder / "part-bad.parquet"
    make(bad)
    with pytest.raises(WarehouseError) as err:
        connect(folder.parents[2])
    assert str(bad) in str(err.value)
    assert needle in str(err.value)
    # the CLI says the same in one line and exits 2
    assert main(["sql", "SELECT 1", "--warehouse", str(folder.parents[2])]) == 2
    assert str(bad) in capsys.readouterr().err


def test_parquet_outside_a_run_folder_is_an_error_naming_it(tmp_path):
    d = tmp_path / "tables" / "judgments"
    d.mkdir(parents=True)
    (d / "stray.parquet").write_bytes(b"x")
    with pytest.raises(WarehouseError, match=r"stray\.parquet"):
        connect(tmp_path)
    (d / "stray.parquet").unlink()
    (d / "misc").mkdir()
    (d / "misc" / "x.parquet").write_bytes(b"x")
    with pytest.raises(WarehouseError, match="not a run_id=<id> folder"):
        connect(tmp_path)


def test_files_are_validated_once_until_they_change(tmp_path, monkeypatch):
    wh = Warehouse(tmp_path)
    with wh.run("import", {"x": 1}) as run:
        run.writer("samples").write({"sample_id": "s1", "messages": [{"role": "user", "content": "hi"}]})
    connect(tmp_path).close()
    calls = []
    import pvdata.warehouse.files as files_mod

    real = files_mod.validate_file
    monkeypatch.setattr(files_mod, "validate_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    connect(tmp_path).close()
    assert calls == []


def test_vector_width_recorded_in_file_metadata(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("vectors", {"x": 1}) as run:
        run.writer("vectors").write({"vector_id": "v", "layer": 1, "values": [1.0, 2.0, 3.0]})
    (path,) = (tmp_path / "tables" / "vectors").glob("*/*.parquet")
    meta = pq.read_metadata(path).metadata
    assert json.loads(meta[META_DIMS]) == {"values": 3}
    assert meta[META_VERSION] == str(SCHEMA_VERSION).encode()


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5) | st.none(), max_size=6))
def test_canonical_json_ignores_key_order(d):
    shuffled = dict(reversed(list(d.items())))
    assert canonical_json(d) == canonical_json(shuffled)
    assert config_hash(d) == config_hash(shuffled)


def test_item_ids_are_short_deterministic_and_distinct():
    a = item_id("gen", 1, {"t": 0.7, "model": "m"})
    assert a == item_id("gen", 1, {"model": "m", "t": 0.7})
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != item_id("gen", 2, {"t": 0.7, "model": "m"})
    assert item_id("x", length=8) == item_id("x")[:8]

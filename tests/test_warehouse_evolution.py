"""Schema evolution by added columns: a warehouse written before `samples.rejected` existed keeps working.

An "old" file here is what an older pvdata wrote: the current samples schema minus its added columns,
with the same key-value stamps (schema version 1, table, run id, dims) and the same atomic write. The
new column must read as NULL for its rows in every reader: the connect() views (local, fsspec memory://
and the DuckDB CLI script of an S3 warehouse), the pv.duckdb catalog, and the direct reads of a run.
"""

from __future__ import annotations

import json
import uuid

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pvdata.errors import WarehouseError
from pvdata.warehouse import (
    TABLES,
    TableSpec,
    Warehouse,
    check_schema,
    connect,
    duckdb_cli_script,
    to_arrow,
    validate_file,
)
from pvdata.warehouse.files import part_name, write_atomic
from pvdata.warehouse.schema import file_metadata

SPEC = TABLES["samples"]
OLD_SCHEMA = pa.schema([f for f in SPEC.schema if f.name not in SPEC.added])


def _sample(i: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "sample_id": f"s{i}",
        "dataset_id": "d0",
        "source": "/data/d.jsonl",
        "line": i + 1,
        "messages": json.dumps([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]),
        "format": "jsonl",
        "n_copies": 1,
        "lines": json.dumps([i + 1]),
    }
    row.update(over)
    return row


def _write_file(wh: Warehouse, run_id: str, rows: list[dict[str, object]], schema: pa.Schema) -> str:
    """Commit one samples file with the given columns and pvdata's stamps, as pvdata's writer would."""
    table = pa.Table.from_pylist([{**r, "run_id": run_id} for r in rows], schema=schema)
    table = table.replace_schema_metadata(file_metadata("samples", run_id, {}))
    path = wh.store.path("tables", "samples", f"run_id={run_id}", part_name(1))
    write_atomic(table, path, store=wh.store)
    return path


def write_old_samples(wh: Warehouse, config: dict[str, object], rows: list[dict[str, object]]) -> str:
    """An import run committed by a pvdata from before `rejected`: its samples file lacks the column."""
    with wh.run("import", config) as run:
        _write_file(wh, run.run_id, rows, OLD_SCHEMA)
    return run.run_id


def write_new_samples(wh: Warehouse, config: dict[str, object], rows: list[dict[str, object]]) -> str:
    with wh.run("import", config) as run:
        run.writer("samples").write(rows)
    return run.run_id


def _build(root: object, *, with_new: bool) -> dict[str, str]:
    wh = Warehouse(root)  # type: ignore[arg-type]
    ids = {"old": write_old_samples(wh, {"old": 1}, [_sample(0), _sample(1)])}
    if with_new:
        ids["new"] = write_new_samples(wh, {"new": 1}, [_sample(2, rejected="a worse answer"), _sample(3)])
    return ids


def _expected(ids: dict[str, str]) -> list[tuple[object, ...]]:
    rows = [("s0", ids["old"], None, 1), ("s1", ids["old"], None, 2)]
    if "new" in ids:
        rows += [("s2", ids["new"], "a worse answer", 3), ("s3", ids["new"], None, 4)]
    return rows


def _check_views(con: duckdb.DuckDBPyConnection, ids: dict[str, str]) -> None:
    for view in ("samples", "samples_all"):
        described = con.execute(f"DESCRIBE {view}").fetchall()
        assert [r[0] for r in described] == SPEC.columns, view  # every column, in the table's order
        assert dict((r[0], r[1]) for r in described)["rejected"] == "VARCHAR", view
        got = con.execute(f"SELECT sample_id, run_id, rejected, line FROM {view} ORDER BY sample_id")
        assert got.fetchall() == _expected(ids), view
    assert con.execute("SELECT DISTINCT typeof(rejected) FROM samples").fetchall() == [("VARCHAR",)]


def _memory_root() -> str:
    pytest.importorskip("fsspec")
    return f"memory://pvdata-evolution-{uuid.uuid4().hex[:8]}/wh"


# -- views ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_new", [True, False], ids=["old-and-new-files", "only-old-files"])
@pytest.mark.parametrize("where", ["local", "memory"])
def test_views_read_the_added_column_as_null_for_old_files(tmp_path, where, with_new):
    root = tmp_path / "wh" if where == "local" else _memory_root()
    ids = _build(root, with_new=with_new)
    con = connect(root)
    _check_views(con, ids)
    con.close()
    table = to_arrow(root, "samples")
    assert table.column_names == SPEC.columns and table.schema.field("rejected").type == pa.string()
    if where == "local":  # the DuckDB CLI catalog holds the same views
        catalog = duckdb.connect(str(tmp_path / "wh" / "pv.duckdb"), read_only=True)
        _check_views(catalog, ids)
        catalog.close()


def test_a_file_committed_after_connect_keeps_a_view_without_the_column_working(tmp_path):
    wh = Warehouse(tmp_path)
    old = write_old_samples(wh, {"old": 1}, [_sample(0), _sample(1)])
    con = connect(tmp_path)
    assert con.execute("SELECT count(*), count(rejected) FROM samples").fetchone() == (2, 0)
    new = write_new_samples(wh, {"new": 1}, [_sample(2, rejected="r")])
    # the live view reads the new file too; its column stays NULL in this connection (connect again)
    assert con.execute("SELECT count(*), count(rejected) FROM samples_all").fetchone() == (3, 0)
    con.close()
    con = connect(tmp_path)
    assert con.execute("SELECT run_id, rejected FROM samples WHERE rejected IS NOT NULL").fetchall() == [
        (new, "r")
    ]
    assert con.execute("SELECT count(*) FROM samples WHERE run_id = ?", [old]).fetchone() == (2,)


# -- direct reads of a run -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_reads_of_one_run_give_nulls_for_a_column_its_files_lack(tmp_path, where):
    root = tmp_path if where == "local" else _memory_root()
    ids = _build(root, with_new=True)
    wh = Warehouse(root)
    assert wh.read_run_table("samples", ids["old"], ["rejected"]).column("rejected").to_pylist() == [None] * 2
    both = wh.read_run_table("samples", ids["old"], ["rejected", "sample_id"])
    assert both.column_names == ["rejected", "sample_id"]
    assert both.column("sample_id").to_pylist() == ["s0", "s1"]
    whole = wh.read_run_table("samples", ids["old"])
    assert whole.column_names == SPEC.columns and whole.schema.field("rejected").type == pa.string()
    assert wh.read_run_table("samples", ids["new"], ["rejected"]).column("rejected").to_pylist() == [
        "a worse answer",
        None,
    ]
    assert wh.read_run_table("samples", ids["old"], ["sample_id"]).column_names == ["sample_id"]
    with wh.run("import", {"old": 1}) as run:  # already succeeded: the body does nothing, reads work
        assert run.skipped
        assert run.done_ids("samples", ["sample_id", "rejected"]) == {("s0", None), ("s1", None)}


def test_a_run_an_older_pvdata_left_unfinished_resumes_with_the_new_schema(tmp_path):
    wh = Warehouse(tmp_path)
    config = {"dataset": "d0"}
    with pytest.raises(RuntimeError), wh.run("import", config) as run:
        _write_file(wh, run.run_id, [_sample(0)], OLD_SCHEMA)
        raise RuntimeError("killed")
    with wh.run("import", config) as run:
        assert run.status_before == "resumed"
        assert run.done_ids("samples", "sample_id") == {"s0"}
        run.writer("samples").write([_sample(1, rejected="r1")])
    rows = wh.read_run_table("samples", run.run_id).sort_by("sample_id")
    assert rows.column_names == SPEC.columns
    assert rows.column("rejected").to_pylist() == [None, "r1"]
    con = connect(tmp_path)
    assert con.execute("SELECT sample_id, rejected FROM samples ORDER BY 1").fetchall() == [
        ("s0", None),
        ("s1", "r1"),
    ]


# -- validation and writing ------------------------------------------------------------------------------


def test_validate_file_accepts_a_file_without_an_added_column(tmp_path):
    wh = Warehouse(tmp_path)
    ids = _build(tmp_path, with_new=True)
    (old_file,) = (tmp_path / "tables" / "samples" / f"run_id={ids['old']}").glob("*.parquet")
    (new_file,) = (tmp_path / "tables" / "samples" / f"run_id={ids['new']}").glob("*.parquet")
    old_info, new_info = validate_file(old_file, "samples"), validate_file(new_file, "samples")
    assert old_info.lacks == ("rejected",) and old_info.num_rows == 2 and old_info.run_id == ids["old"]
    assert new_info.lacks == ()
    assert check_schema(OLD_SCHEMA, SPEC, "here") == ("rejected",)
    assert check_schema(SPEC.schema, SPEC, "here") == ()
    assert wh.get_run(ids["old"])["status"] == "succeeded"


@pytest.mark.parametrize("schema_of", ["current", "old"])
def test_a_file_missing_a_column_that_was_not_added_is_still_an_error_naming_it(tmp_path, schema_of):
    wh = Warehouse(tmp_path)
    base = SPEC.schema if schema_of == "current" else OLD_SCHEMA
    schema = pa.schema([f for f in base if f.name != "line"])
    row = {k: v for k, v in _sample(0).items() if k != "line"}
    path = _write_file(wh, "r1", [row], schema)
    missing = r"missing column\(s\) line that table 'samples' requires"
    with pytest.raises(WarehouseError, match=missing) as err:
        validate_file(path, "samples")
    assert path in str(err.value) and "rejected" not in str(err.value).split("requires")[0]
    with pytest.raises(WarehouseError, match=r"run_id=r1/part-.*\.parquet: missing column\(s\) line"):
        connect(tmp_path)


def test_the_writer_always_writes_the_full_current_schema(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("import", {"n": 1}) as run:
        w = run.writer("samples")
        w.write({"sample_id": "s0"})  # no 'rejected': null, like any nullable column left out
        w.write_columns({"sample_id": ["s1", "s2"], "rejected": ["r", None]})
        w.flush()
        with pytest.raises(WarehouseError, match="has no column"):
            w.write({"sample_id": "s3", "chosen": "x"})
    files = list((tmp_path / "tables" / "samples").glob("run_id=*/*.parquet"))
    assert files and all(pq.read_schema(f).names == SPEC.columns for f in files)
    assert all(validate_file(f, "samples").lacks == () for f in files)
    got = wh.read_run_table("samples", run.run_id, ["sample_id", "rejected"]).sort_by("sample_id")
    assert got.to_pylist() == [
        {"sample_id": "s0", "rejected": None},
        {"sample_id": "s1", "rejected": "r"},
        {"sample_id": "s2", "rejected": None},
    ]


def test_only_a_nullable_column_of_the_schema_can_be_added():
    schema = pa.schema([pa.field("run_id", pa.string(), nullable=False), pa.field("x", pa.string())])
    assert TableSpec("t", schema, "doc", added=("x",)).added == ("x",)
    with pytest.raises(ValueError, match="must be a nullable column"):
        TableSpec("t", schema, "doc", added=("run_id",))
    with pytest.raises(ValueError, match="must be a nullable column"):
        TableSpec("t", schema, "doc", added=("y",))
    for spec in TABLES.values():
        assert all(spec.schema.field(c).nullable for c in spec.added)
    assert SPEC.added == ("rejected",) and SPEC.columns[-1] == "rejected"


# -- the DuckDB CLI script of an S3 warehouse ----------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("moto")
    from object_store import moto_server

    with moto_server() as server:
        yield server


@pytest.mark.parametrize("with_new", [True, False], ids=["old-and-new-files", "only-old-files"])
def test_the_duckdb_cli_script_reads_old_files(s3, tmp_path, with_new):
    """As in test_warehouse_remote: run the script over a local mirror of the bucket (no httpfs offline)."""
    root = s3.uri(s3.new_bucket())
    ids = _build(root, with_new=with_new)
    _check_views(connect(root), ids)  # the registered pyarrow datasets fill nulls too
    script = duckdb_cli_script(root)
    samples_line = next(line for line in script.splitlines() if "VIEW samples_all" in line)
    assert ("union_by_name = true" in samples_line) == with_new
    assert ('CAST(NULL AS VARCHAR) AS "rejected"' in samples_line) == (not with_new)
    assert script.count("union_by_name") == int(with_new)
    bucket_prefix = root.split("?")[0]
    fs, path = pafs.FileSystem.from_uri(root)
    pafs.copy_files(path, str(tmp_path / "mirror"), source_filesystem=fs)
    local_sql = script.replace(bucket_prefix, str(tmp_path / "mirror"))
    con = duckdb.connect()
    con.execute("\n".join(line for line in local_sql.splitlines() if "httpfs" not in line))
    _check_views(con, ids)

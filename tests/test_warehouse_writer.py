"""TableWriter: exact columns, safe casts, chunked atomic commits, float16 activations."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pvdata.errors import WarehouseError
from pvdata.warehouse import Warehouse, connect


@pytest.fixture()
def run(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("evaluate", {"test": "writer"}) as r:
        yield r


def _files(run, table):
    d = run.root / "tables" / table / f"run_id={run.run_id}"
    return sorted(d.iterdir()) if d.is_dir() else []


def _proj(i: int) -> dict:
    return {"source_id": f"s{i}", "vector_id": "v", "layer": 3, "kind": "proj", "value": i / 10}


def test_commits_every_chunk_rows_and_on_close_with_unique_increasing_parts(run):
    w = run.writer("projections", chunk_rows=10)
    for i in range(25):
        w.write(_proj(i))
    assert len(_files(run, "projections")) == 2 and w.buffered_rows == 5
    w.close()
    files = _files(run, "projections")
    assert [pq.read_metadata(f).num_rows for f in files] == [10, 10, 5]
    assert [f.name.split("-")[1] for f in files] == ["00001", "00002", "00003"]
    assert all(f.suffix == ".parquet" for f in files)
    assert run.writer("projections") is not w  # a closed writer is replaced
    assert run.writer("projections")._seq == 4  # numbering continues, never collides


def test_commits_after_chunk_seconds(run):
    w = run.writer("projections", chunk_seconds=0.05)
    w.write(_proj(0))
    assert _files(run, "projections") == []
    time.sleep(0.06)
    w.write(_proj(1))
    assert len(_files(run, "projections")) == 1


def test_rows_of_one_write_call_stay_in_one_file(run):
    w = run.writer("projections", chunk_rows=3)
    w.write([_proj(i) for i in range(5)])
    (f,) = _files(run, "projections")
    assert pq.read_metadata(f).num_rows == 5


def test_write_columns_broadcasts_scalars_and_takes_2d_vectors(run):
    w = run.writer("activations")
    w.write_columns(
        {
            "source_id": np.array(["a", "b", "c"]),
            "layer": np.array([1, 1, 1]),
            "pooling": "response_avg",
            "values": np.arange(12, dtype=np.float64).reshape(3, 4),
        }
    )
    w.write(
        pa.table(
            {
                "source_id": ["d"],
                "layer": pa.array([2], pa.int64()),
                "pooling": ["prompt_last"],
                "values": [[1.0, 2.0, 3.0, 4.0]],
            }
        )
    )
    w.flush()
    con = connect(run.root, include_running=True)
    rows = con.execute(
        "SELECT source_id, layer, pooling, values, run_id FROM activations ORDER BY 1"
    ).fetchall()
    assert rows[0] == ("a", 1, "response_avg", (0.0, 1.0, 2.0, 3.0), run.run_id)
    assert rows[3][:3] == ("d", 2, "prompt_last")
    assert con.execute("SELECT typeof(values) FROM activations LIMIT 1").fetchone() == ("FLOAT[4]",)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({**_proj(0), "bogus": 1}, "has no column(s) 'bogus'"),
        ({k: v for k, v in _proj(0).items() if k != "source_id"}, "lacks required column(s) source_id"),
        ({**_proj(0), "run_id": "someone-else"}, "belongs to"),
    ],
)
def test_bad_rows_are_rejected_at_write(run, row, needle):
    with pytest.raises(WarehouseError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        run.writer("projections").write(row)


def test_no_silent_casts_between_kinds(run):
    w = run.writer("projections")
    with pytest.raises(WarehouseError, match="'layer' has type string, expected int32"):
        w.write(pa.table({"source_id": ["s"], "vector_id": ["v"], "layer": ["3"], "kind": ["proj"]}))
    with pytest.raises(WarehouseError, match="'layer' has type double"):
        w.write_columns({"source_id": ["s"], "vector_id": "v", "layer": [3.5], "kind": "proj"})
    with pytest.raises(WarehouseError, match="cannot be stored as int32"):
        w.write(pa.table({"source_id": ["s"], "vector_id": ["v"], "layer": [2**40], "kind": ["proj"]}))
    with pytest.raises(WarehouseError, match="required column 'vector_id' has 1 null"):
        w.write(
            pa.table(
                {
                    "source_id": ["s"],
                    "vector_id": pa.array([None], pa.string()),
                    "layer": [1],
                    "kind": ["proj"],
                }
            )
        )
    w.write(pa.table({"source_id": ["s"], "vector_id": ["v"], "layer": [3], "kind": ["proj"], "value": [1]}))
    assert w.buffered_rows == 1  # int -> int32 and int -> double are safe widenings


def test_json_columns_accept_dicts_and_timestamps_are_utc(run):
    import datetime as dt

    run.writer("generations").write({"generation_id": "g", "steering": {"coef": 2.0, "layers": [4]}})
    run.writer("reviews").write(
        {
            "sample_id": "s",
            "verdict": "ok",
            "at": dt.datetime(2025, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        }
    )
    run.writer("generations").flush()
    run.writer("reviews").flush()
    con = connect(run.root, include_running=True)
    assert con.execute(
        "SELECT steering ->> 'coef', steering -> 'layers' ->> 0 FROM generations"
    ).fetchone() == (
        "2.0",
        "4",
    )
    assert con.execute('SELECT "at" FROM reviews').fetchone()[0] == dt.datetime(2025, 1, 1, 10)


def test_float16_activations_halve_the_bytes_and_read_back_as_float(tmp_path):
    wh = Warehouse(tmp_path)
    rng = np.random.default_rng(0)
    vals = rng.standard_normal((200, 64)).astype(np.float32)
    for dtype in ("float32", "float16"):
        with wh.run("activations", {"dtype": dtype}) as run:
            run.writer("activations", vector_dtype=dtype).write_columns(
                {
                    "source_id": [f"s{i}" for i in range(200)],
                    "layer": 5,
                    "pooling": "response_avg",
                    "values": vals,
                }
            )
    sizes = {}
    for d in (tmp_path / "tables" / "activations").iterdir():
        (f,) = d.glob("*.parquet")
        sizes[str(pq.read_schema(f).field("values").type.value_type)] = f.stat().st_size
    assert sizes["halffloat"] < 0.7 * sizes["float"]
    con = connect(tmp_path)
    assert con.execute("SELECT DISTINCT typeof(values) FROM activations").fetchall() == [("FLOAT[64]",)]
    got = np.array(
        con.execute(
            "SELECT values FROM activations a JOIN runs r USING (run_id) WHERE r.config LIKE '%float16%' "
            "ORDER BY source_id"
        )
        .fetchnumpy()["values"]
        .tolist()
    )
    order = np.argsort([f"s{i}" for i in range(200)])
    np.testing.assert_allclose(got, vals[order], rtol=1e-3, atol=1e-3)
    with (
        pytest.raises(WarehouseError, match="float16 is for activations"),
        wh.run("vectors", {"x": 1}) as run,
    ):
        run.writer("vectors", vector_dtype="float16")


def test_a_failed_write_leaves_no_file_and_no_tmp(run, monkeypatch):
    import pvdata.warehouse.files as files_mod

    def broken(table, where, **kw):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(files_mod.pq, "write_table", broken)
    w = run.writer("projections")
    w.write(_proj(0))
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    assert _files(run, "projections") == []


def test_runs_table_is_not_writable_through_a_writer(run):
    with pytest.raises(WarehouseError, match=r"written by Warehouse\.run"):
        run.writer("runs")


def test_a_bad_row_in_a_call_buffers_none_of_that_call(run):
    w = run.writer("projections")
    with pytest.raises(WarehouseError, match="lacks required"):
        w.write([_proj(0), {"source_id": "s1"}])
    assert w.buffered_rows == 0


def test_a_value_arrow_cannot_convert_fails_the_writer_and_the_run(tmp_path):
    wh = Warehouse(tmp_path)
    with pytest.raises(WarehouseError, match="does not fit"), wh.run("evaluate", {"bad": 1}) as run:
        w = run.writer("projections")
        w.write(_proj(0))
        w.write({**_proj(1), "layer": "three"})
        with contextlib.suppress(WarehouseError):
            w.flush()  # a pipeline that swallows the error ...
        w.write(_proj(2))  # ... cannot go on writing
    con = connect(tmp_path)
    assert con.execute("SELECT status FROM runs").fetchone() == ("failed",)
    assert con.execute("SELECT count(*) FROM projections_all").fetchone() == (0,)

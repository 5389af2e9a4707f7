"""Readers: views, FLOAT[H] vs FLOAT[], and Arrow / Polars / HF datasets exports."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pvdata.warehouse import Warehouse, connect, to_arrow, to_hf_dataset, to_polars


def _vectors(root, widths):
    wh = Warehouse(root)
    for i, h in enumerate(widths):
        with wh.run("vectors", {"i": i}) as run:
            run.writer("vectors").write(
                {
                    "vector_id": f"v{i}",
                    "trait": "evil",
                    "layer": i,
                    "values": np.full(h, float(i), np.float32),
                }
            )


def test_vector_columns_are_float_h_when_all_files_agree_else_float_list(tmp_path):
    _vectors(tmp_path / "same", [6, 6])
    _vectors(tmp_path / "mixed", [6, 4])
    con = connect(tmp_path / "same")
    assert con.execute("SELECT DISTINCT typeof(values) FROM vectors").fetchall() == [("FLOAT[6]",)]
    # FLOAT[H] gives DuckDB's array functions
    assert con.execute(
        "SELECT array_inner_product(a.values, b.values) FROM vectors a, vectors b "
        "WHERE a.vector_id = 'v1' AND b.vector_id = 'v1'"
    ).fetchone() == (6.0,)
    con = connect(tmp_path / "mixed")
    assert con.execute("SELECT DISTINCT typeof(values) FROM vectors").fetchall() == [("FLOAT[]",)]
    assert sorted(r[0] for r in con.execute("SELECT len(values) FROM vectors").fetchall()) == [4, 6]


def test_exports_to_arrow_polars_and_hf_datasets(tmp_path):
    _vectors(tmp_path, [5, 5, 5])
    t = to_arrow(tmp_path, "vectors")
    assert isinstance(t, pa.Table) and t.num_rows == 3
    assert pa.types.is_fixed_size_list(t.schema.field("values").type)
    q = to_arrow(tmp_path, "SELECT vector_id, layer FROM vectors WHERE layer > 0 ORDER BY layer")
    assert q.to_pydict() == {"vector_id": ["v1", "v2"], "layer": [1, 2]}
    df = to_polars(tmp_path, "vectors")
    assert df.shape == (3, len(t.schema)) and df["values"].dtype.size == 5
    ds = to_hf_dataset(tmp_path, "vectors_all")
    assert len(ds) == 3 and len(ds[0]["values"]) == 5
    assert sorted(ds["vector_id"]) == ["v0", "v1", "v2"]


def test_a_connection_sees_new_commits_and_holds_no_lock(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("evaluate", {"a": 1}) as run:
        run.writer("projections").write({"source_id": "s", "vector_id": "v", "layer": 1, "kind": "proj"})
    con = connect(tmp_path, include_running=True)
    other = connect(tmp_path)  # a second reader at the same time
    with wh.run("evaluate", {"a": 2}) as run:  # and a writer
        w = run.writer("projections")
        w.write({"source_id": "t", "vector_id": "v", "layer": 1, "kind": "proj"})
        w.flush()
        assert con.execute("SELECT count(*) FROM projections").fetchone() == (2,)
        assert other.execute("SELECT count(*) FROM projections").fetchone() == (1,)
    assert other.execute("SELECT count(*) FROM projections").fetchone() == (2,)
    con.close()
    other.close()

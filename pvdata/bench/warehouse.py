"""`pvdata bench warehouse`: projection rows written per second, and the projection-vs-score query time.

Baselines in the same run: the same rows written as one file by pyarrow.parquet.write_table (no run
lifecycle, chunking, validation or fsync), and the same query over bare read_parquet views (no
succeeded-run filter). Targets: 1M rows written in under 5 s, the query over 1M joined rows under 1 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1_000_000, help="projection rows to write")
    parser.add_argument(
        "--layers", type=int, default=25, help="layers (one vector each); sources = rows/layers"
    )
    parser.add_argument("--batch", type=int, default=1000, help="sources per write call")
    parser.add_argument("--chunk-rows", type=int, default=250_000, help="rows per committed file")
    parser.add_argument(
        "--dict-rows",
        type=int,
        default=100_000,
        help="also time per-row dict writes of this many rows (0: skip)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="query repetitions (the median is reported)")
    parser.add_argument(
        "--warehouse",
        default=None,
        help="a new or empty folder to write into (default: a temporary folder, deleted afterwards)",
    )


def run(args: argparse.Namespace) -> int:
    from pvdata.errors import ConfigError

    if args.rows < args.layers or args.layers < 1:
        raise ConfigError(f"--rows {args.rows} must be at least --layers {args.layers} (and layers >= 1)")
    if args.warehouse:
        root = Path(args.warehouse)
        if (root / "tables").exists() and any((root / "tables").iterdir()):
            raise ConfigError(f"--warehouse {root} already has tables; give a new or empty folder")
        return _bench(args, root)
    tmp = tempfile.mkdtemp(prefix="pvdata-bench-")
    try:
        return _bench(args, Path(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bench(args: argparse.Namespace, root: Path) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pvdata.warehouse import Warehouse, connect, load_query
    from pvdata.warehouse.reader import execute

    n_layers = args.layers
    n_sources = args.rows // n_layers
    n_rows = n_sources * n_layers
    rng = np.random.default_rng(0)
    sources = pa.array([hashlib.sha256(f"gen-{i}".encode()).hexdigest()[:16] for i in range(n_sources)])
    vector_ids = pa.array([f"vec-{layer:03d}" for layer in range(n_layers)])
    latent = rng.standard_normal(n_sources)
    # projection on layer l tracks the latent trait more closely at deeper layers
    weight = np.linspace(0.1, 1.0, n_layers)
    values = (latent[:, None] * weight[None, :] + rng.standard_normal((n_sources, n_layers))).reshape(-1)
    scores = np.clip(50 + 20 * latent + 5 * rng.standard_normal(n_sources), 0, 100)

    wh = Warehouse(root)
    with wh.run("bench", {"bench": "warehouse", "table": "vectors", "layers": n_layers}) as vec_run:
        vec_run.writer("vectors").write_columns(
            {
                "vector_id": vector_ids,
                "trait": "evil",
                "layer": np.arange(n_layers, dtype=np.int32),
                "values": rng.standard_normal((n_layers, 16)).astype(np.float32),
            }
        )
    with wh.run("bench", {"bench": "warehouse", "table": "judgments", "sources": n_sources}) as judge_run:
        judge_run.writer("judgments").write_columns(
            {
                "judgment_id": pa.array([f"j-{s}" for s in sources.to_pylist()]),
                "generation_id": sources,
                "metric": "evil",
                "judge_model": "bench-judge",
                "score": scores,
            }
        )

    # -- write: TableWriter fed column batches, the way a pipeline writes a batch of items ----------------
    per_call = args.batch * n_layers
    t0 = time.perf_counter()
    config = {"bench": "warehouse", "table": "projections", "rows": n_rows, "batch": args.batch}
    with wh.run("bench", config, parent_run_ids=[vec_run.run_id, judge_run.run_id]) as proj_run:
        w = proj_run.writer("projections", chunk_rows=args.chunk_rows)
        layer_idx = np.arange(n_layers, dtype=np.int32)
        for start in range(0, n_sources, args.batch):
            end = min(start + args.batch, n_sources)
            k = end - start
            w.write_columns(
                {
                    "source_id": sources.take(pa.array(np.repeat(np.arange(start, end), n_layers))),
                    "vector_id": vector_ids.take(pa.array(np.tile(layer_idx, k))),
                    "layer": np.tile(layer_idx, k),
                    "kind": "proj",
                    "value": values[start * n_layers : end * n_layers],
                }
            )
    write_s = time.perf_counter() - t0

    # baseline: the same rows as one pyarrow.parquet.write_table call
    base_dir = root / "baseline"
    base_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = pa.table(
        {
            "run_id": pa.array([proj_run.run_id] * n_rows),
            "source_id": sources.take(pa.array(np.repeat(np.arange(n_sources), n_layers))),
            "vector_id": vector_ids.take(pa.array(np.tile(np.arange(n_layers), n_sources))),
            "layer": pa.array(np.tile(np.arange(n_layers, dtype=np.int32), n_sources)),
            "kind": pa.array(["proj"] * n_rows),
            "value": pa.array(values),
        }
    )
    pq.write_table(table, base_dir / "projections.parquet", compression="zstd")
    base_write_s = time.perf_counter() - t0
    del table

    dict_rate = None
    if args.dict_rows > 0:
        m = min(args.dict_rows, n_rows)
        rows = [
            {
                "source_id": sources[i // n_layers].as_py(),
                "vector_id": f"vec-{i % n_layers:03d}",
                "layer": i % n_layers,
                "kind": "proj",
                "value": float(values[i]),
            }
            for i in range(m)
        ]
        t0 = time.perf_counter()
        with wh.run("bench", {"bench": "warehouse", "table": "projections", "dict_rows": m}) as dict_run:
            dw = dict_run.writer("projections", chunk_rows=args.chunk_rows)
            for row in rows:
                dw.write(row)
        dict_rate = m / (time.perf_counter() - t0)
        del rows
        # keep the dict run out of the query: it would double-count the first m rows
        _hide(root, dict_run.run_id)

    # -- query ---------------------------------------------------------------------------------------------
    sql = load_query("projection_vs_score")
    t0 = time.perf_counter()
    con = connect(root)
    connect_s = time.perf_counter() - t0
    times = []
    result: list[tuple[object, ...]] = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        cols, result, _ = execute(con, sql)
        times.append(time.perf_counter() - t0)
    con.close()
    n_col = cols.index("n")
    joined = sum(int(r[n_col]) for r in result if r[0] == proj_run.run_id)  # type: ignore[call-overload]

    import duckdb

    bare = duckdb.connect()
    for table_name, glob in (
        ("projections", f"{root}/tables/projections/run_id={proj_run.run_id}/*.parquet"),
        ("judgments", f"{root}/tables/judgments/*/*.parquet"),
        ("vectors", f"{root}/tables/vectors/*/*.parquet"),
    ):
        bare.execute(f"CREATE VIEW {table_name} AS SELECT * FROM read_parquet('{glob}')")
    from pvdata.warehouse.schema import get_spec

    bare.register("screenings", get_spec("screenings").schema.empty_table())  # the query's screening part
    base_times = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        bare.execute(sql).fetchall()
        base_times.append(time.perf_counter() - t0)
    bare.close()

    write_rate = n_rows / write_s
    query_s = statistics.median(times)
    base_query_s = statistics.median(base_times)
    files_written = len(
        list((root / "tables" / "projections" / f"run_id={proj_run.run_id}").glob("*.parquet"))
    )
    print(
        f"pvdata bench warehouse: {n_rows:,} projection rows ({n_sources:,} sources x {n_layers} layers), "
        f"{os.cpu_count()} CPU cores"
    )
    print(
        f"write  pvdata TableWriter (column batches of {per_call:,} rows, {files_written} files, "
        f"run lifecycle, fsync): {write_s:.3f} s = {write_rate:,.0f} rows/s"
    )
    print(
        f"       baseline one pyarrow write_table call: {base_write_s:.3f} s "
        f"(pvdata/baseline time ratio {write_s / base_write_s:.2f}x)"
    )
    if dict_rate is not None:
        print(
            f"       per-row dicts through TableWriter ({min(args.dict_rows, n_rows):,} rows): "
            f"{dict_rate:,.0f} rows/s"
        )
    print(f"query  connect (validate files, create views): {connect_s:.3f} s")
    print(
        f"       projection_vs_score over {joined:,} joined rows -> {len(result)} groups: "
        f"median {query_s:.3f} s of {len(times)} (first {times[0]:.3f} s)"
    )
    print(
        f"       baseline bare read_parquet views: median {base_query_s:.3f} s "
        f"(pvdata/baseline time ratio {query_s / base_query_s:.2f}x)"
    )
    print(f"write_rows_per_s: {write_rate:.0f}")
    print(f"corr_query_s: {query_s:.3f}")
    return 0


def _hide(root: Path, run_id: str) -> None:
    """Remove a bench-only run's files (a bench detail: pipelines never delete)."""
    for table in ("projections", "runs"):
        shutil.rmtree(root / "tables" / table / f"run_id={run_id}", ignore_errors=True)

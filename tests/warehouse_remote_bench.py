"""What a warehouse on object storage costs: the same run written and read on a local folder, on moto's S3
server on loopback, and on fsspec's memory://.

    .venv/bin/python tests/warehouse_remote_bench.py [--rows 1000000] [--chunk 250000] [--repeat 3]

Each store: one `bench` run that writes --rows projection rows through `write_columns` in batches of
--chunk (a file per batch), then connect() (list + validate the files, make the views), a GROUP BY over
all rows, and to_arrow of the whole table. Prints seconds per step (median of --repeat) as JSON lines.
moto keeps objects in memory behind a Python HTTP server, so the S3 numbers are the protocol's overhead
(requests, multipart uploads, ranged reads), not a network's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from object_store import moto_server

from pvdata.warehouse import Warehouse, connect, to_arrow

QUERY = "SELECT layer, count(*) AS n, avg(value) AS mean FROM projections GROUP BY 1 ORDER BY 1"


def one_round(root: str, rows: int, chunk: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    layers = 25
    sources = rows // layers
    t0 = time.perf_counter()
    wh = Warehouse(root)
    with wh.run("bench", {"rows": rows, "id": uuid.uuid4().hex}) as run:
        w = run.writer("projections", chunk_rows=chunk)
        for start in range(0, sources, chunk // layers):
            n = min(chunk // layers, sources - start)
            w.write_columns(
                {
                    "source_id": np.repeat(np.array([f"s{i:08d}" for i in range(start, start + n)]), layers),
                    "vector_id": "v",
                    "layer": np.tile(np.arange(layers, dtype=np.int32), n),
                    "kind": "proj",
                    "value": rng.standard_normal(n * layers),
                }
            )
    t1 = time.perf_counter()
    con = connect(root)
    t2 = time.perf_counter()
    result = con.execute(QUERY).fetchall()
    t3 = time.perf_counter()
    assert sum(r[1] for r in result) == rows, result
    table = to_arrow(root, "projections")
    t4 = time.perf_counter()
    assert table.num_rows == rows
    con.close()
    return {"write_run_s": t1 - t0, "connect_s": t2 - t1, "query_s": t3 - t2, "to_arrow_s": t4 - t3}


def bench(name: str, make_root: Any, rows: int, chunk: int, repeat: int) -> dict[str, Any]:
    rounds = [one_round(make_root(), rows, chunk) for _ in range(repeat)]
    out: dict[str, Any] = {"store": name, "rows": rows, "files": -(-rows // chunk)}
    for k in rounds[0]:
        out[k] = round(statistics.median(r[k] for r in rounds), 3)
    out["write_rows_per_s"] = round(rows / out["write_run_s"])
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=250_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, moto_server() as s3:
        stores = {
            "local": lambda: str(Path(tmp) / uuid.uuid4().hex),
            "s3 (moto, loopback)": lambda: s3.uri(s3.new_bucket()),
            "memory:// (fsspec)": lambda: f"memory://bench-{uuid.uuid4().hex}",
        }
        for name, make_root in stores.items():
            print(json.dumps(bench(name, make_root, args.rows, args.chunk, args.repeat)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

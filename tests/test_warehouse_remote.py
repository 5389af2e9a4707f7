"""A warehouse on object storage: moto's S3 server on loopback (a real S3 API) and fsspec's memory://.

Covers the run lifecycle, commits, failed and resumed runs (in process and after kill -9), the write lease,
reading through `pvdata sql` / `runs` / to_arrow / to_polars, the DuckDB CLI script, credentials in URIs,
and `pvdata screen` into an S3 warehouse giving the same rows as a local one.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from object_store import moto_server
from warehouse_helpers import populate, run_worker, start_worker

from pvdata.cli.main import main
from pvdata.errors import WarehouseError
from pvdata.warehouse import (
    Warehouse,
    connect,
    duckdb_cli_script,
    item_id,
    open_store,
    redact_text,
    refresh_catalog,
    run_is_alive,
    to_arrow,
    to_polars,
)
from pvdata.warehouse.lease import Lease
from pvdata.warehouse.schema import TABLES

pytest.importorskip("moto")


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


@pytest.fixture
def root(s3):
    """A fresh S3 warehouse URI (a new bucket) per test."""
    return s3.uri(s3.new_bucket())


def _rows(root, table: str, key: str, include_running: bool = False) -> list[tuple[object, ...]]:
    con = connect(root, include_running=include_running)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
    finally:
        con.close()


def _gen(i: int) -> dict[str, object]:
    return {"generation_id": item_id("g", i), "trait": "evil", "answer": f"answer {i}", "sample_index": i}


# -- URIs and credentials --------------------------------------------------------------------------------


def test_local_paths_and_file_uris_stay_local_folders(tmp_path):
    for given in (tmp_path, str(tmp_path), f"file://{tmp_path}"):
        store = open_store(given)
        assert store.is_local and store.root == tmp_path
    wh = Warehouse(f"file://{tmp_path}")
    with wh.run("import", {"x": 1}) as run:
        run.writer("samples").write({"sample_id": "s1"})
    assert list((tmp_path / "tables" / "samples").glob("run_id=*/part-*.parquet"))
    assert (tmp_path / "pv.duckdb").is_file()


@pytest.mark.parametrize(
    "uri",
    [
        "s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY@bucket/wh",
        "s3://AKIAIOSFODNN7EXAMPLE@bucket/wh",
        "s3://bucket/wh?region=us-east-1&secret_key=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
        "s3://bucket/wh?session_token=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    ],
)
def test_a_uri_with_credentials_is_refused_without_echoing_them(uri, capsys):
    with pytest.raises(WarehouseError, match="carries credentials") as err:
        open_store(uri)
    assert "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY" not in str(err.value)
    assert "AWS_ACCESS_KEY_ID" in str(err.value)
    assert main(["sql", "SELECT 1", "--warehouse", uri]) == 2
    out = capsys.readouterr()
    assert "carries credentials" in out.err
    assert "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY" not in out.err + out.out
    assert "AKIAIOSFODNN7EXAMPLE" not in out.err + out.out


def test_redact_text_masks_uri_credentials():
    text = redact_text("s3://AK:topsecretvalue@b/x?secret_key=abc123&region=r max_tokens=5")
    assert "topsecretvalue" not in text and "abc123" not in text
    assert "region=r" in text and "max_tokens=5" in text


def test_an_unknown_scheme_is_a_clear_error():
    with pytest.raises(WarehouseError, match=r"no filesystem for nosuchfs://"):
        open_store("nosuchfs://bucket/wh")


# -- S3: lifecycle, commits, failures, resume -------------------------------------------------------------


def test_run_lifecycle_and_layout_on_s3(s3, root):
    bucket = root.split("/")[2]
    wh = Warehouse(root)
    assert not wh.exists() and wh.root == root and wh.uri == root
    with wh.run("generate", {"n": 3}, model_id="tiny") as run:
        assert run.status_before == "new"
        w = run.writer("generations", chunk_rows=2)
        w.write([_gen(0), _gen(1)])  # a full chunk: committed now
        assert run_is_alive(root, run.run_id)  # its lease object is live
        assert _rows(root, "runs", "run_id", include_running=True)[0][2] == "running"
        assert len(_rows(root, "generations", "generation_id", include_running=True)) == 2
        assert _rows(root, "generations", "generation_id") == []  # not succeeded yet
        w.write(_gen(2))
    assert not run_is_alive(root, run.run_id)
    con = connect(root)
    status, attempt, stats = con.execute("SELECT status, attempt, stats FROM runs").fetchone()
    assert (status, attempt) == ("succeeded", 1)
    assert json.loads(stats)["rows_total"] == {"generations": 3}
    assert con.execute("SELECT count(*), min(sample_index) FROM generations").fetchone() == (3, 0)
    assert con.execute("SELECT list(status ORDER BY seq) FROM runs_all").fetchone()[0] == [
        "running",
        "succeeded",
    ]
    keys = s3.keys(bucket)
    parts = [k for k in keys if k.startswith("wh/tables/")]
    assert all(
        re.fullmatch(r"wh/tables/\w+/run_id=[\w.-]+/part-\d{5}-[0-9a-f]{8}\.parquet", k) for k in parts
    )
    assert len([k for k in parts if "/generations/" in k]) == 2 and len(parts) == 4  # + 2 run events
    assert not [k for k in keys if k.endswith(".tmp") or k.endswith(".lease")]
    assert "wh/pv.sql" in keys  # the DuckDB CLI script, not a pv.duckdb


def test_a_failed_run_keeps_its_committed_rows_out_of_the_default_views(root):
    wh = Warehouse(root)
    with pytest.raises(RuntimeError), wh.run("generate", {"n": 5}) as run:
        run.writer("generations").write([_gen(0), _gen(1)])
        raise RuntimeError("exploded with key sk-abcdefghijklmnopqrstuvwx")
    con = connect(root)
    status, error = con.execute("SELECT status, error FROM runs").fetchone()
    assert status == "failed" and "exploded" in error and "sk-abcdef" not in error
    assert con.execute("SELECT count(*) FROM generations").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM generations_all").fetchone() == (2,)
    assert not run_is_alive(root, run.run_id)


def _generate(root, n: int, fail_at: int = -1) -> tuple[str, int]:
    wh = Warehouse(root)
    with wh.run("generate", {"n": n}, model_id="tiny") as run:
        if run.skipped:
            return run.status_before, 0
        done = run.done_ids("generations", "generation_id")
        w = run.writer("generations", chunk_rows=3)
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"boom at {i}")
            row = _gen(i)
            if row["generation_id"] not in done:
                w.write(row)
        run.stats["skipped"] = len(done)
    return run.status_before, len(done)


def test_a_resumed_run_skips_its_done_ids_and_matches_an_uninterrupted_one(s3, root):
    with pytest.raises(RuntimeError, match="boom at 7"):
        _generate(root, 10, fail_at=7)
    assert _generate(root, 10) == ("resumed", 7)  # 6 committed in chunks + 1 buffered at the failure
    assert _generate(root, 10)[0] == "already_succeeded"
    clean = s3.uri(s3.new_bucket())
    assert _generate(clean, 10) == ("new", 0)
    assert _rows(root, "generations", "generation_id") == _rows(clean, "generations", "generation_id")
    con = connect(root)
    assert con.execute(
        "SELECT list(seq ORDER BY seq), list(status ORDER BY seq) FROM runs_all"
    ).fetchone() == (
        [1, 2, 3, 4],
        ["running", "failed", "running", "succeeded"],
    )
    names = [Path(k).name for k in s3.keys(root.split("/")[2], "wh/tables/generations/")]
    seqs = [int(n.split("-")[1]) for n in names]
    assert len(set(names)) == len(names) == 4 and sorted(seqs) == [1, 2, 3, 4]  # no part number reused


def test_kill9_then_resume_after_the_lease_expires_is_exactly_once(s3, root, monkeypatch):
    monkeypatch.setenv("PVDATA_LEASE_SECONDS", "3")
    n = 60
    bucket = root.split("/")[2]
    proc = start_worker(root, n, "--delay", "0.03", "--chunk", "5")
    deadline = time.monotonic() + 90
    while len(s3.keys(bucket, "wh/tables/generations/")) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the worker committed nothing in 90 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = len(_rows(root, "generations", "generation_id", include_running=True))
    assert 0 < partial < n and partial % 5 == 0
    assert _rows(root, "runs", "run_id", include_running=True)[0][2] == "running"

    # the dead writer's lease still holds the run until it expires: a rerun now is refused
    blocked = run_worker(root, n)
    if blocked.returncode != 0:  # (unless the 3 s ran out while the rerun started)
        assert "is being written by pid" in blocked.stderr
        time.sleep(3.5)
        resumed = run_worker(root, n)
    else:
        resumed = blocked
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("STATUS resumed")

    clean = s3.uri(s3.new_bucket())
    assert run_worker(clean, n).returncode == 0
    for table, key in (("generations", "generation_id"), ("judgments", "judgment_id")):
        assert _rows(root, table, key) == _rows(clean, table, key)
    con = connect(root)
    assert con.execute("SELECT count(*), count(DISTINCT generation_id) FROM generations").fetchone() == (n, n)
    assert con.execute("SELECT status, attempt FROM runs").fetchone() == ("succeeded", 2)


def test_the_lease_lets_one_writer_hold_a_run_and_expires_when_it_dies(root, monkeypatch):
    import types

    import pvdata.warehouse.lease as lease_module

    # a loser retries twice after 0.2-1.0 s (a racing writer may be about to give up); with a 2 s ttl,
    # those waits alone could outlast the holder's lease on a loaded machine: keep them short here
    monkeypatch.setattr(lease_module, "random", types.SimpleNamespace(uniform=lambda a, b: 0.05))
    store = open_store(root)
    first, second = Lease(store, "generate-x", ttl=2), Lease(store, "generate-x", ttl=2)
    first.acquire()
    time.sleep(0.1)
    with pytest.raises(WarehouseError, match="is being written by pid"):
        second.acquire()
    assert second.path is None and len(first.live_leases()) == 1  # the loser removed its own object
    time.sleep(2.5)  # longer than the ttl: the holder renews every ttl/3, so it is still live
    assert first.is_held_elsewhere() and not first.lost
    first.release()
    second.acquire()
    assert second.is_held_elsewhere()

    # a writer that dies stops renewing: its lease expires and the next one takes over (and deletes it)
    second._stop.set()
    second._thread.join()
    third = Lease(store, "generate-x", ttl=2)
    with pytest.raises(WarehouseError):
        third.acquire()
    time.sleep(2.2)
    third.acquire()
    assert [e.name.endswith(".lease") for e in store.list_dir(third.dir)] == [True]
    third.release()
    assert not third.is_held_elsewhere()


def test_two_processes_on_one_s3_run_are_refused_cleanly(root, monkeypatch):
    wh = Warehouse(root)
    with wh.run("generate", {"n": 1}) as run:
        with pytest.raises(WarehouseError, match="being written by"), wh.run("generate", {"n": 1}):
            pass
        run.writer("generations").write(_gen(0))
    assert _rows(root, "runs", "run_id")[0][2] == "succeeded"


# -- reading ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def populated(s3):
    root = s3.uri(s3.new_bucket())
    ids = populate(root)
    w = Warehouse(root)
    with pytest.raises(RuntimeError), w.run("judge", {"broken": True}, parent_run_ids=[ids["evaluate"]]):
        raise RuntimeError("judge exploded")
    ids["failed"] = w.run_id_for("judge", {"broken": True}, parent_run_ids=[ids["evaluate"]])
    return root, ids


def test_sql_runs_and_exports_read_an_s3_warehouse(populated, tmp_path, capsys, monkeypatch):
    root, ids = populated
    local = tmp_path / "local"
    populate(local)
    q = "SELECT layer, kind, count(*) AS n, round(sum(value), 6) AS s FROM projections GROUP BY ALL"
    q += " ORDER BY ALL"
    assert main(["sql", q, "--format", "json", "--warehouse", root]) == 0
    remote_out = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("PVDATA_WAREHOUSE", root)  # the environment variable takes a URI too
    assert main(["sql", q, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == remote_out
    assert main(["sql", q, "--format", "json", "--warehouse", str(local)]) == 0
    assert json.loads(capsys.readouterr().out) == remote_out and remote_out

    assert main(["runs", "list", "--format", "json", "--warehouse", root]) == 0
    listed = {r["run_id"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert listed[ids["failed"]] == "failed" and listed[ids["evaluate"]] == "succeeded"
    assert main(["runs", "show", ids["evaluate"], "--format", "json", "--warehouse", root]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tables"]["generations"] == {"rows": 30, "files": 1}
    assert ids["failed"] in [c["run_id"] for c in shown["children"]]

    for name in ("vectors", "projections", "judgments"):
        assert to_arrow(root, name).equals(to_arrow(local, name).select(to_arrow(root, name).column_names))
    vec = to_arrow(root, "vectors")
    assert pa.types.is_fixed_size_list(vec.schema.field("values").type)
    pl_df = to_polars(root, "SELECT metric, avg(score) AS m FROM judgments GROUP BY 1 ORDER BY 1")
    assert pl_df.height == 2
    assert main(["sql", "SELECT count(*) FROM generations_all", "--warehouse", root]) == 0


def test_vectors_store_and_resume_reads_work_on_s3(populated):
    root, ids = populated
    wh = Warehouse(root)
    assert wh.get_run(ids["vectors"])["status"] == "succeeded"
    assert wh.read_run_table("vectors", ids["vectors"], ["layer"]).column("layer").to_pylist() == [2, 4]
    assert wh.read_run_table("samples", ids["vectors"]).num_rows == 0
    assert wh.has_table("vectors") and not wh.has_table("train_metrics")
    from pvdata.vectors.store import latest_vector_id

    assert latest_vector_id(wh.connect(), "evil", "tiny") is not None


def test_a_foreign_file_in_an_s3_warehouse_is_named(s3, root):
    populate(root, n_gen=3)
    fs, path = pafs.FileSystem.from_uri(root)
    with fs.open_output_stream(f"{path}/tables/projections/run_id=x/stray.parquet") as f:
        pq.write_table(pa.table({"a": [1]}), f)
    with pytest.raises(WarehouseError, match=r"s3://.*/run_id=x/stray\.parquet.*no pvdata schema version"):
        connect(root)


def test_the_duckdb_cli_script_defines_the_same_views(populated, tmp_path):
    """Run the script against a local mirror of the bucket (httpfs cannot be installed offline)."""
    root, _ = populated
    script = duckdb_cli_script(root)
    bucket_prefix = root.split("?")[0]
    assert "INSTALL httpfs;" in script and "CREATE PERSISTENT SECRET" in script
    assert f"read_parquet('{bucket_prefix}/tables/projections/*/*.parquet'" in script
    assert "pvdata-test-secret" not in script and "pvdata-test-key" not in script
    fs, path = pafs.FileSystem.from_uri(root)
    pafs.copy_files(path, str(tmp_path / "mirror"), source_filesystem=fs)
    local_sql = script.replace(bucket_prefix, str(tmp_path / "mirror"))
    local_sql = "\n".join(line for line in local_sql.splitlines() if "httpfs" not in line)
    con = duckdb.connect()
    con.execute(local_sql)
    ours = connect(root)
    for t in TABLES:
        q = f"SELECT count(*) FROM {t}"
        assert con.execute(q).fetchone() == ours.execute(q).fetchone(), t
    assert refresh_catalog(root) == f"{bucket_prefix}/pv.sql"


def test_memory_filesystem_through_fsspec(tmp_path):
    pytest.importorskip("fsspec")
    root = "memory://pvdata-test/wh"
    ids = populate(root)
    con = connect(root)
    assert con.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone() == (3,)
    assert con.execute("SELECT count(*) FROM projections").fetchone() == (60,)
    local = tmp_path / "local"
    populate(local)
    assert to_arrow(root, "screenings").equals(to_arrow(local, "screenings"))
    assert refresh_catalog(root) is None  # the DuckDB CLI cannot read memory://
    assert Warehouse(root).get_run(ids["screen"])["status"] == "succeeded"


def test_local_outputs_of_a_remote_warehouse_go_to_the_cache(monkeypatch, tmp_path, root):
    monkeypatch.setenv("PVDATA_CACHE", str(tmp_path))
    bucket = root.split("/")[2]
    assert (
        Warehouse(root).local_dir("exports", "r1")
        == tmp_path / "warehouses" / "s3" / bucket / "wh" / "exports" / "r1"
    )


# -- a real pipeline into S3 -----------------------------------------------------------------------------


def test_screen_into_s3_gives_the_rows_of_a_local_run(root, tmp_path, capsys):
    from test_screen import MODEL, chat, make_vector, write_lines

    vector = str(make_vector().save(tmp_path / "evil.safetensors"))
    data = write_lines(tmp_path / "d.jsonl", [chat(f"q{i}?", f"answer {i} " * (1 + i % 3)) for i in range(6)])
    local = str(tmp_path / "wh")
    for wh, out in ((root, "o1"), (local, "o2")):
        args = [
            "screen", data, "--model", MODEL, "--vector", vector, "--layer", "2,3",
            "--method", "exact,raw", "--top-k", "2", "--max-new-tokens", "4", "--warehouse", wh,
            "--out", str(tmp_path / out),
        ]  # fmt: skip
        assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert (tmp_path / "o1" / "flagged.jsonl").read_text() == (tmp_path / "o2" / "flagged.jsonl").read_text()
    for table in TABLES:  # every table, byte for byte after sorting; the ones screen fills are not empty
        if table != "runs":
            got, want = _rows(root, table, "ALL"), _rows(local, table, "ALL")
            assert got == want, table
            assert want or table not in ("samples", "generations", "projections", "screenings"), table
    remote_runs = _rows(root, "runs", "run_id")
    assert [r[:3] for r in remote_runs] == [r[:3] for r in _rows(local, "runs", "run_id")]
    assert {r[2] for r in remote_runs} == {"succeeded"}
    # resume reads: the same command again finds every run succeeded and does nothing new
    assert main([*args[:-4], "--warehouse", root, "--out", str(tmp_path / "o3")]) == 0
    assert _rows(root, "screenings", "ALL") == _rows(local, "screenings", "ALL")
    assert len(_rows(root, "runs_all", "run_id")) == len(remote_runs) * 2

"""Run lifecycle: runs rows, failed runs hidden, include_running, resume, no-op reruns, force, lineage."""

from __future__ import annotations

import json

import duckdb
import pytest
from warehouse_helpers import populate

from pvdata.errors import WarehouseError
from pvdata.warehouse import REDACTED, Warehouse, connect, is_secret_key, load_query, redact, redact_text


def _proj(i: int) -> dict:
    return {"source_id": f"s{i}", "vector_id": "v", "layer": 1, "kind": "proj", "value": float(i)}


def _q(root, sql, include_running=False):
    con = connect(root, include_running=include_running)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_runs_row_says_running_then_succeeded_with_stats_and_provenance(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("evaluate", {"n": 3}, model_id="tiny") as run:
        assert run.status_before == "new" and run.run_id.startswith("evaluate-")
        w = run.writer("projections")
        w.write([_proj(i) for i in range(3)])
        w.flush()
        assert _q(tmp_path, "SELECT status FROM runs") == [("running",)]
        assert _q(tmp_path, "SELECT count(*) FROM projections") == [(0,)]
        assert _q(tmp_path, "SELECT count(*) FROM projections", include_running=True) == [(3,)]
        run.stats["custom"] = 7
    ((status, stats, model, version, started, finished, attempt, config, chash),) = _q(
        tmp_path,
        "SELECT status, stats, model_id, pvdata_version, started_at, finished_at, attempt, config, "
        "config_hash FROM runs",
    )
    assert status == "succeeded" and model == "tiny" and version and attempt == 1
    assert finished >= started
    stats = json.loads(stats)
    assert (
        stats["custom"] == 7
        and stats["rows"] == {"projections": 3}
        and stats["rows_total"] == {"projections": 3}
    )
    assert json.loads(config) == {"n": 3} and len(chash) == 64
    assert _q(tmp_path, "SELECT count(*) FROM projections") == [(3,)]
    assert _q(tmp_path, "SELECT count(*) FROM runs_all") == [(2,)]  # append-only: two events


def test_a_failed_run_records_the_error_and_its_rows_are_hidden_by_default(tmp_path):
    wh = Warehouse(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), wh.run("evaluate", {"n": 5}) as run:
        w = run.writer("projections", chunk_rows=2)
        for i in range(5):
            if i == 3:
                raise RuntimeError("boom")
            w.write(_proj(i))
    ((status, error),) = _q(tmp_path, "SELECT status, error FROM runs")
    assert status == "failed" and error == "RuntimeError: boom"
    assert _q(tmp_path, "SELECT count(*) FROM projections") == [(0,)]
    assert _q(tmp_path, "SELECT count(*) FROM projections", include_running=True) == [(0,)]
    assert _q(tmp_path, "SELECT count(*) FROM projections_all") == [(3,)]  # complete items were committed

    with wh.run("evaluate", {"n": 5}) as again:
        assert again.status_before == "resumed" and again.attempt == 2
        done = again.done_ids("projections")
        assert done == {"s0", "s1", "s2"}
        assert again.done_ids("projections", ("source_id", "layer")) == {("s0", 1), ("s1", 1), ("s2", 1)}
        w = again.writer("projections")
        w.write([_proj(i) for i in range(5) if f"s{i}" not in done])
    assert _q(tmp_path, "SELECT status, attempt, error FROM runs") == [("succeeded", 2, None)]
    assert _q(tmp_path, "SELECT count(*), count(DISTINCT source_id) FROM projections") == [(5, 5)]


def test_rerun_of_a_succeeded_run_is_a_no_op_and_force_makes_a_new_run(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("evaluate", {"n": 1}) as first:
        first.writer("projections").write(_proj(0))
    with wh.run("evaluate", {"n": 1}) as again:
        assert again.status_before == "already_succeeded" and again.skipped
        assert again.run_id == first.run_id
        assert "already succeeded" in again.message and "--force" in again.message
        with pytest.raises(WarehouseError, match="already succeeded"):
            again.writer("projections")
    assert _q(tmp_path, "SELECT count(*) FROM runs_all") == [(2,)]
    with wh.run("evaluate", {"n": 1}, force=True) as forced:
        assert forced.status_before == "new"
        assert forced.run_id != first.run_id and forced.run_id.startswith(first.run_id)
        forced.writer("projections").write(_proj(0))
    assert _q(tmp_path, "SELECT run_id, count(*) FROM projections GROUP BY 1 ORDER BY 1") == [
        (first.run_id, 1),
        (forced.run_id, 1),
    ]
    assert json.loads(_q(tmp_path, f"SELECT stats FROM runs WHERE run_id = '{forced.run_id}'")[0][0])[
        "forced"
    ]


def test_run_ids_depend_on_kind_config_parents_and_model_only(tmp_path):
    wh = Warehouse(tmp_path)
    a = wh.run_id_for("judge", {"a": 1, "b": [1, 2]})
    assert a == wh.run_id_for("judge", {"b": [1, 2], "a": 1})
    assert a != wh.run_id_for("judge", {"a": 2, "b": [1, 2]})
    assert a != wh.run_id_for("generate", {"a": 1, "b": [1, 2]})
    assert a != wh.run_id_for("judge", {"a": 1, "b": [1, 2]}, model_id="m")
    assert a != wh.run_id_for("judge", {"a": 1, "b": [1, 2]}, parent_run_ids=["p"])
    assert wh.run_id_for("judge", {"k": 1}, parent_run_ids=["p", "q"]) == wh.run_id_for(
        "judge", {"k": 1}, parent_run_ids=["q", "p"]
    )


def test_two_writers_of_the_same_run_are_refused(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("evaluate", {"n": 1}):
        with pytest.raises(WarehouseError, match=r"being written by pid \d+"), wh.run("evaluate", {"n": 1}):
            pass
        from pvdata.warehouse import run_is_alive

        assert run_is_alive(tmp_path, wh.run_id_for("evaluate", {"n": 1}))
    assert not run_is_alive(tmp_path, wh.run_id_for("evaluate", {"n": 1}))


def test_unknown_kind_and_missing_parent_are_clear_errors(tmp_path):
    wh = Warehouse(tmp_path)
    with pytest.raises(WarehouseError, match="run kind 'extrct' is not valid; kinds: extract"):
        wh.run("extrct", {})
    with (
        pytest.raises(WarehouseError, match="parent run 'nope' is not in warehouse"),
        wh.run("judge", {}, parent_run_ids=["nope"]),
    ):
        pass


def test_lineage_parents_children_and_the_lineage_query(tmp_path):
    ids = populate(tmp_path)
    rows = _q(tmp_path, "SELECT run_id, parent_run_ids FROM runs ORDER BY run_id")
    parents = dict(rows)
    assert parents[ids["evaluate"]] == [ids["vectors"]]
    assert parents[ids["screen"]] == [ids["vectors"]]
    children = _q(
        tmp_path,
        f"SELECT run_id FROM runs WHERE list_contains(parent_run_ids, '{ids['vectors']}') ORDER BY 1",
    )
    assert {c[0] for c in children} == {ids["evaluate"], ids["screen"]}
    con = connect(tmp_path)
    lineage = con.execute(load_query("run_lineage")).fetchall()
    cols = [d[0] for d in con.description]
    con.close()
    by_run = {r[cols.index("run_id")]: r for r in lineage}
    assert by_run[ids["vectors"]][cols.index("depth")] == 0
    assert by_run[ids["evaluate"]][cols.index("depth")] == 1
    assert by_run[ids["evaluate"]][cols.index("path")] == f"{ids['vectors']} > {ids['evaluate']}"


def test_secrets_never_reach_the_runs_table(tmp_path):
    wh = Warehouse(tmp_path)
    cfg = {
        "judge": {
            "model": "gpt-4.1-mini",
            "api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            "max_tokens": 5,
        },
        "hf_token": "hf_abcdefghijklmnopqrstuvwxyz",
        "OPENAI_API_KEY": "whatever",
        "db_password": "hunter2",
        "endpoint": "https://user:s3cret@example.org/v1",
        "note": "key sk-abcdefghijklmnopqrstuvwxyz in text",
        "n_tokens": 3,
    }
    with pytest.raises(ValueError), wh.run("judge", cfg) as run:
        raise ValueError("auth failed for sk-abcdefghijklmnopqrstuvwxyz012")
    other = dict(cfg, judge=dict(cfg["judge"], api_key="sk-another-key-entirely-0123456789"))
    assert wh.run_id_for("judge", other) == run.run_id  # the secret's value does not shape the run id
    raw = "".join(str(v) for v in _q(tmp_path, "SELECT config, error FROM runs")[0])
    for secret in ("abcdefghijklmnopqrstuvwxyz", "hunter2", "s3cret", "whatever"):
        assert secret not in raw
    stored = json.loads(_q(tmp_path, "SELECT config FROM runs")[0][0])
    assert stored["judge"] == {"model": "gpt-4.1-mini", "api_key": REDACTED, "max_tokens": 5}
    assert stored["n_tokens"] == 3 and stored["endpoint"] == f"https://user:{REDACTED}@example.org/v1"
    assert not is_secret_key("max_new_tokens") and is_secret_key("wandb_api_key") and is_secret_key("Token")
    assert redact({"password": None}) == {"password": None}
    assert redact_text("Authorization: Bearer abcdefgh12345678") == f"Authorization: Bearer {REDACTED}"


def test_catalog_file_is_refreshed_atomically_while_a_cli_user_has_it_open(tmp_path):
    wh = Warehouse(tmp_path)
    with wh.run("evaluate", {"n": 1}) as run:
        run.writer("projections").write(_proj(0))
    catalog = tmp_path / "pv.duckdb"
    assert catalog.is_file()
    user = duckdb.connect(str(catalog), read_only=True)
    assert user.execute("SELECT count(*) FROM projections").fetchone() == (1,)
    with wh.run("evaluate", {"n": 2}) as run:
        run.writer("projections").write([_proj(1), _proj(2)])
        run.writer("vectors").write({"vector_id": "v", "layer": 1, "values": [1.0, 0.0]})
    assert user.execute("SELECT count(*) FROM projections").fetchone() == (3,)  # the old catalog still works
    user.close()
    fresh = duckdb.connect(str(catalog), read_only=True)
    assert fresh.execute("SELECT typeof(values) FROM vectors").fetchone() == ("FLOAT[2]",)
    assert fresh.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    (tags,) = fresh.execute("SELECT tags FROM duckdb_databases() WHERE database_name = 'pv'").fetchone()
    assert tags["storage_version"].startswith("v1.0.0")  # older DuckDB CLIs can open it
    fresh.close()
    assert not list(tmp_path.glob("*.tmp"))

"""The dashboard on empty, partial and unreadable warehouses; its query module without Streamlit;
and `pvdata dashboard`, the command that starts it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dashboard_apptest import APP, frame, latest_runs, metrics, raw, run_app, screened
from dashboard_fixture import SCREEN_LAYER, SCREEN_LINES, TOP_K, Built

from pvdata.dashboard import queries as q
from pvdata.dashboard.common import EMPTY_HINTS, PAGES, app_path, page_link
from pvdata.errors import ConfigError
from pvdata.warehouse import Warehouse, connect

# -- empty, partial and unreadable warehouses ----------------------------------------------------------


@pytest.mark.parametrize("page", list(PAGES))
def test_empty_or_missing_warehouse_says_which_command_fills_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    for root, what in ((tmp_path / "nope", "does not exist"), (tmp_path, "is empty")):
        at = run_app(root, monkeypatch, page=page)
        assert not at.exception
        assert what in at.info[0].value
        codes = [c.value for c in at.code]
        assert EMPTY_HINTS["runs"] in codes and EMPTY_HINTS[page] in codes


def test_a_page_without_its_table_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Warehouse(tmp_path).run("import", {"source": "x"}):
        pass
    for page in PAGES:
        at = run_app(tmp_path, monkeypatch, page=page)
        assert not at.exception
        if page == "runs":
            assert metrics(at)["Runs"] == "1"
        else:
            assert [c.value for c in at.code] == [EMPTY_HINTS[page]]


def test_a_running_run_whose_process_died_is_marked_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = Warehouse(tmp_path)
    with wh.run("import", {"source": "done"}):
        pass
    killed = wh.run("import", {"source": "killed"})
    killed.__enter__()  # a 'running' row ...
    killed._lock.release()  # ... and its process gone (the kernel drops the lock of a dead process)
    at = run_app(tmp_path, monkeypatch, page="runs")
    assert metrics(at)["Running"] == "1"
    statuses = frame(at, "run_id", "status").set_index("run_id")["status"]
    assert statuses[killed.run_id] == "running (stale)"
    assert (statuses != "running (stale)").sum() == 1


def test_an_unreadable_file_is_a_clear_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Warehouse(tmp_path).run("import", {"source": "x"}):
        pass
    bad = tmp_path / "tables" / "vectors" / "run_id=x" / "part-1.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), bad)
    at = run_app(tmp_path, monkeypatch, page="vectors")
    assert not at.exception
    assert "part-1.parquet" in at.error[0].value and "schema version" in at.error[0].value


# -- the query module, without Streamlit ---------------------------------------------------------------


def test_queries_histogram_export_and_lineage(dash: Built) -> None:
    con = connect(dash.root)
    try:
        group = (dash.dataset_id, "evil", dash.vector_ids[("evil", "response_avg")], SCREEN_LAYER, "exact")
        hist = q.score_histogram(con, dash.screen_run, group, 10)
        exact = screened(dash)
        assert hist["n"].sum() == SCREEN_LINES
        assert hist[hist["flagged"]]["n"].sum() == exact["flagged"].sum() == TOP_K
        assert hist["bin_start"].min() == pytest.approx(exact["score"].min())
        assert hist["bin_end"].max() == pytest.approx(exact["score"].max())
        for r in hist.itertuples():  # each sample falls in its bin
            inside = exact[(exact["score"] >= r.bin_start - 1e-9) & (exact["score"] <= r.bin_end + 1e-9)]
            assert r.n <= len(inside[inside["flagged"] == r.flagged])
        ranked = q.screening_ranked(con, dash.screen_run, group, False, "all", 3)
        lines = q.to_jsonl(
            q.selection_records(con, dash.screen_run, group, list(ranked["sample_id"]))
        ).splitlines()
        records = [json.loads(line) for line in lines]
        top3 = exact.sort_values("score", ascending=False).head(3)
        assert [r["sample_id"] for r in records] == list(ranked["sample_id"]) == list(top3["sample_id"])
        assert [r["rank"] for r in records] == [1, 2, 3]
        assert [r["score"] for r in records] == pytest.approx(list(top3["score"]))
        samples = raw(dash.root, "samples").set_index("sample_id")
        for r in records:
            assert r["messages"] == json.loads(samples.loc[r["sample_id"], "messages"])
        threshold, source = q.screen_threshold(con, dash.screen_run, group)
        assert threshold == pytest.approx(np.sort(exact["score"].to_numpy())[-TOP_K])
        assert source == f"screenings.threshold (top {TOP_K} of {SCREEN_LINES} scored samples)"

        # lineage: the screen run's stages and the vectors run it used are its ancestors
        runs = latest_runs(dash.root)
        lineage = q.run_lineage(con, dash.screen_run)
        relations = dict(zip(lineage["run_id"], lineage["relation"], strict=True))
        assert relations[dash.screen_run] == "self"
        for parent in runs.loc[dash.screen_run, "parent_run_ids"]:
            assert relations[parent] == "ancestor"
        assert any(r.startswith("vectors-") and rel == "ancestor" for r, rel in relations.items())
        # the train runs are children of the vectors run they steered with and monitored
        vec_run = runs.loc[dash.train_runs["steered"], "parent_run_ids"][0]
        assert vec_run.startswith("vectors-")
        lineage = q.run_lineage(con, vec_run)
        relations = dict(zip(lineage["run_id"], lineage["relation"], strict=True))
        assert all(relations[r] == "descendant" for r in dash.train_runs.values())
        dot = q.lineage_dot(lineage, q.lineage_edges(con, list(lineage["run_id"])), vec_run)
        assert f'"{vec_run}" -> "{dash.train_runs["steered"]}";' in dot
        assert q.base_answers(con, exact["sample_id"].iloc[0])["generation_id"].tolist() == [
            exact["base_generation_id"].iloc[0]
        ]
    finally:
        con.close()


def test_steering_of_config_group_of_and_links() -> None:
    assert q.group_of(
        {"dataset_id": "d", "trait": "evil", "vector_id": "v", "layer": 2.0, "method": "raw"}
    ) == (
        "d",
        "evil",
        "v",
        2,
        "raw",
    )
    assert q.group_of({"dataset_id": None, "trait": pd.NA, "layer": float("nan"), "method": "exact"}) == (
        None,
        None,
        None,
        None,
        "exact",
    )
    assert q.steering_of_config({"steering": None}) is None
    assert q.steering_of_config({"steering": {"coef": 0, "layers": [2]}}) is None
    assert q.steering_of_config({"config": {"steering": {"mode": "ablate"}}}) == {"mode": "ablate"}
    assert q.steering_of_config({"steering": {"coef": 2.5}}) == {"coef": 2.5}
    assert q.steering_of_config("not a dict") is None
    assert page_link("screening", run_id="screen-1", sample_id=None) == "?page=screening&run_id=screen-1"
    assert page_link("runs", run_id="a b&c") == "?page=runs&run_id=a+b%26c"
    with pytest.raises(ConfigError, match="pages: runs"):
        page_link("nope")


def test_append_review_checks_its_input(tmp_path: Path) -> None:
    from pvdata.dashboard.reviews import append_review

    with pytest.raises(ConfigError, match="verdicts: confirmed, false_positive"):
        append_review(tmp_path, sample_id="s", verdict="maybe")
    review = append_review(tmp_path, sample_id="s", verdict="confirmed", reviewer="ann")
    rows = raw(str(tmp_path), "reviews")
    assert rows[["run_id", "sample_id", "verdict", "reviewer"]].values.tolist() == [
        [review.run_id, "s", "confirmed", "ann"]
    ]


# -- the CLI -------------------------------------------------------------------------------------------


def test_dashboard_cli_builds_the_streamlit_command_and_checks_its_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    from pvdata.cli import dashboard
    from pvdata.cli.main import main

    assert app_path() == APP
    with pytest.raises(ConfigError, match="editable mode"):
        app_path(tmp_path)
    assert main(["dashboard", "--port", "70000", "--warehouse", str(tmp_path)]) == 2
    assert "--port 70000" in capsys.readouterr().err

    started: list[list[str]] = []

    class FakePopen:
        def __init__(self, cmd: list[str]) -> None:
            started.append(cmd)

        def wait(self, timeout: float | None = None) -> int:
            return 0

        def send_signal(self, signum: int) -> None:
            pass

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    assert (
        main(["dashboard", "--warehouse", str(tmp_path / "wh"), "--port", "8600", "--host", "0.0.0.0"]) == 0
    )
    assert started == [dashboard.streamlit_command(APP, str(tmp_path / "wh"), 8600, "0.0.0.0")]
    cmd = started[0]
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(APP)]
    assert (
        cmd[cmd.index("--server.port") + 1] == "8600" and cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    )
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[-3:] == ["--", "--warehouse", str(tmp_path / "wh")]
    captured = capsys.readouterr()
    assert "does not exist yet" in captured.err and "http://0.0.0.0:8600/" in captured.out

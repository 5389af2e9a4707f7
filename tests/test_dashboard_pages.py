"""The dashboard pages, rendered with Streamlit's AppTest on a warehouse filled by real tiny pipeline
runs (tests/dashboard_fixture.py), their numbers checked against the Parquet files read independently
with pyarrow and numpy (tests/dashboard_apptest.py)."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dashboard_apptest import chart_data, frame, frames, latest_runs, metrics, raw, run_app, screened, texts
from dashboard_fixture import (
    EVAL_EVERY,
    SCREEN_LAYER,
    SCREEN_LINES,
    SCREEN_METHODS,
    TOP_K,
    TRAIN_STEPS,
    Built,
)

from pvdata.dashboard.common import PAGES, page_link

# -- every page --------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_without_exception(
    dash: Built, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    at = run_app(dash.root, monkeypatch, page=page)
    assert not at.exception, [e.value for e in at.exception]
    assert at.header[0].value == PAGES[page]
    assert at.radio(key="page").value == page
    assert at.query_params["page"] == [page] or at.query_params["page"] == page
    errors = [e.value for e in at.error]
    if page == "runs":  # the newest run is the failed import: its error is shown
        assert errors == [latest_runs(dash.root).loc[dash.failed_run, "error"]]
    else:
        assert errors == []
    assert len(at.get("vega_lite_chart")) >= 1


# -- runs ----------------------------------------------------------------------------------------------


def test_runs_page_counts_detail_rows_and_lineage(dash: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = latest_runs(dash.root)
    at = run_app(dash.root, monkeypatch, page="runs")
    m = metrics(at)
    assert m["Runs"] == str(len(runs))
    assert m["Failed"] == str((runs["status"] == "failed").sum()) == "1"
    assert m["Succeeded"] == str((runs["status"] == "succeeded").sum())
    table = frame(at, "run_id", "kind", "status", "seconds")
    assert sorted(table["run_id"]) == sorted(runs.index)
    row = table.set_index("run_id").loc[dash.extract_runs["evil"]]
    expect = runs.loc[dash.extract_runs["evil"]]
    assert row["seconds"] == pytest.approx(
        (expect["finished_at"] - expect["started_at"]).total_seconds(), abs=1e-3
    )

    # deep link to the generate run under the evil extract: kind, rows per table, lineage both ways
    generate = next(
        p for p in runs.loc[dash.extract_runs["evil"], "parent_run_ids"] if p.startswith("generate-")
    )
    at = run_app(dash.root, monkeypatch, page="runs", run_id=generate)
    assert at.selectbox(key="runs_run").value == generate
    m = metrics(at)
    assert (m["Kind"], m["Status"]) == ("generate", "succeeded")
    rows = frame(at, "table", "rows").set_index("table")["rows"].to_dict()
    on_disk = {
        t.name: sum(pq.read_metadata(f).num_rows for f in (t / f"run_id={generate}").glob("*.parquet"))
        for t in Path(dash.root, "tables").iterdir()
        if (t / f"run_id={generate}").is_dir() and t.name != "runs"
    }
    assert rows == on_disk == {"generations": 8}
    children = [r for r, parents in runs["parent_run_ids"].items() if generate in list(parents)]
    text = texts(at)
    for child in children:
        assert f"descendant: [{child}]({page_link('runs', run_id=child)})" in text
    assert dash.extract_runs["evil"] in text  # a grandchild
    assert len(at.get("graphviz_chart")) == 1


# -- vectors -------------------------------------------------------------------------------------------


def _stored_vectors(root: str) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for r in raw(root, "vectors").itertuples():
        out[(r.vector_id, int(r.layer))] = np.asarray(r.values, dtype=np.float64)
    return out


def test_vectors_page_norms_and_cosines_match_the_stored_values(
    dash: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = _stored_vectors(dash.root)
    at = run_app(dash.root, monkeypatch, page="vectors")
    overview = frame(at, "vector_id", "trait", "pooling", "source_runs")
    assert sorted(overview["vector_id"]) == sorted(set(dash.vector_ids.values()))
    norms = frame(at, "trait", "pooling", "vector_id", "L0", "L4")
    assert len(norms) == 6
    for r in norms.itertuples():
        for layer in range(5):
            assert getattr(r, f"L{layer}") == pytest.approx(
                np.linalg.norm(stored[(r.vector_id, layer)]), rel=1e-5
            )

    # cosine at the default layer (2) between the response_avg vectors of the two traits
    assert at.selectbox(key="vectors_layer").value == 2
    assert at.selectbox(key="vectors_pooling").value == "response_avg"
    cos = frame(at, "label_a").set_index("label_a")
    evil, humorous = dash.vector_ids[("evil", "response_avg")], dash.vector_ids[("humorous", "response_avg")]
    a, b = stored[(evil, 2)], stored[(humorous, 2)]
    expect = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos.loc[f"evil/response_avg/{evil[:8]}", f"humorous/response_avg/{humorous[:8]}"] == pytest.approx(
        expect, abs=1e-5
    )
    assert cos.loc[f"evil/response_avg/{evil[:8]}", f"evil/response_avg/{evil[:8]}"] == pytest.approx(1.0)

    # another layer and pooling through the widgets
    at.selectbox(key="vectors_layer").select(4)
    at.selectbox(key="vectors_pooling").select("prompt_avg")
    at.run()
    cos = frame(at, "label_a").set_index("label_a")
    e2, h2 = dash.vector_ids[("evil", "prompt_avg")], dash.vector_ids[("humorous", "prompt_avg")]
    a, b = stored[(e2, 4)], stored[(h2, 4)]
    assert cos.loc[f"evil/prompt_avg/{e2[:8]}", f"humorous/prompt_avg/{h2[:8]}"] == pytest.approx(
        float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-5
    )

    # a deep link from a vectors run keeps only its vectors
    vec_run = overview.set_index("vector_id").loc[evil, "source_runs"]
    at = run_app(dash.root, monkeypatch, page="vectors", run_id=vec_run)
    assert set(frame(at, "vector_id", "trait").trait) == {"evil"}


# -- steering ------------------------------------------------------------------------------------------


def _expected_sweep(dash: Built) -> dict[tuple[str, float], dict[str, Any]]:
    runs = latest_runs(dash.root)
    cells = [p for p in runs.loc[dash.evaluate_run, "parent_run_ids"] if p.startswith("generate-")]
    gens = raw(dash.root, "generations")
    gens = gens[gens["run_id"].isin(cells)]
    judgments = raw(dash.root, "judgments")
    scores: dict[tuple[str, str], list[float | None]] = defaultdict(list)
    for j in judgments.itertuples():
        scores[(j.generation_id, j.metric)].append(None if pd.isna(j.score) else j.score)
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for g in gens.itertuples():
        steering = json.loads(g.steering)
        key = (",".join(str(x) for x in steering["layers"]), float(steering["coef"]))
        cell = out.setdefault(key, {"n": 0, "trait": [], "coherence": []})
        cell["n"] += 1
        for metric, name in (("evil", "trait"), ("coherence", "coherence")):
            cell[name] += [s for s in scores[(g.generation_id, metric)] if s is not None]
    return out


def test_steering_page_shows_the_sweep_with_n_valid(dash: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    expect = _expected_sweep(dash)
    at = run_app(dash.root, monkeypatch, page="steering")
    assert at.query_params["run_id"] in (dash.evaluate_run, [dash.evaluate_run])
    table = frame(at, "layer", "coef", "trait_mean", "coherence_mean", "n_valid", "n_generations")
    assert len(table) == len(expect) == 6
    for r in table.itertuples():
        cell = expect[(r.layer, float(r.coef))]
        assert r.n_generations == cell["n"] == 4
        assert r.n_valid == len(cell["trait"])
        assert r.trait_mean == pytest.approx(np.mean(cell["trait"]))
        assert r.coherence_mean == pytest.approx(np.mean(cell["coherence"]))
        assert r.trait_null_rate == pytest.approx(1 - len(cell["trait"]) / cell["n"])
    assert (table["n_valid"] < table["n_generations"]).any()  # the scripted judge nulled some scores
    m = metrics(at)
    assert m["Cells"] == "6" and m["Generations"] == "24"
    assert m["Valid trait scores"] == str(sum(len(c["trait"]) for c in expect.values()))
    eligible = {  # steered towards the trait (coef > 0) and coherent, as evaluate picks
        k: np.mean(c["trait"]) for k, c in expect.items() if k[1] > 0 and np.mean(c["coherence"]) >= 50
    }
    if eligible:
        layer, coef = max(eligible, key=lambda k: eligible[k])
        assert m["Best (coherence ≥ 50)"] == f"layer {layer} coef {coef:g}"
    else:  # the scripted judge's coherence is below the floor wherever coef > 0
        assert m["Best (coherence ≥ 50)"] == "none"

    # the heatmaps draw exactly these means, each cell labelled `mean (n_valid/n)`
    heat = dict(chart_data(at))
    for title, name in (("trait score (n_valid/n)", "trait"), ("coherence (n scored/n)", "coherence")):
        (cells,) = heat[title]
        assert len(cells) == 6
        for r in cells.to_dict("records"):
            cell = expect[(r["layer"], float(r["coef"]))]
            mean = np.mean(cell[name])
            assert r[f"{name}_mean"] == pytest.approx(mean)
            assert r[f"{name}_text"] == f"{mean:.1f} ({len(cell[name])}/{cell['n']})"


# -- projection vs trait score -------------------------------------------------------------------------


def _pairs(dash: Built, layer: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    proj = raw(dash.root, "projections")
    proj = proj[(proj["run_id"] == dash.monitor_run) & (proj["layer"] == layer) & (proj["kind"] == kind)]
    judgments = raw(dash.root, "judgments")
    evil = judgments[(judgments["metric"] == "evil") & judgments["score"].notna()]
    joined = proj.merge(evil, left_on="source_id", right_on="generation_id")
    return joined["value"].to_numpy(), joined["score"].to_numpy()


def test_projection_page_pearson_r_matches_numpy(dash: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    # no run_id: the monitor run comes first (it has judged scores; the screen's projection stage has none)
    at = run_app(dash.root, monkeypatch, page="projection")
    assert at.selectbox(key="proj_run").value == dash.monitor_run
    assert at.selectbox(key="proj_kind").value == "prompt_last_proj"
    assert at.selectbox(key="proj_layer").value == 2
    x, y = _pairs(dash, 2, "prompt_last_proj")
    m = metrics(at)
    assert m["n"] == str(len(x)) == "33"
    assert m["Pearson r"] == f"{np.corrcoef(x, y)[0, 1]:.3f}"
    assert m["Mean projection"] == f"{x.mean():.3f}"
    assert m["Mean trait score"] == f"{y.mean():.1f}"
    table_ = frame(at, "layer", "kind", "r", "n")
    assert len(table_) == 9  # 3 layers x 3 kinds
    for r in table_.itertuples():
        px, py = _pairs(dash, int(r.layer), r.kind)
        assert r.r == pytest.approx(np.corrcoef(px, py)[0, 1], abs=1e-9)
        assert r.n == len(px)
    points = frame(at, "projection", "score", "source_id")
    assert sorted(points["projection"]) == pytest.approx(sorted(x))
    (scatter,) = [frames for title, frames in chart_data(at) if "prompt_last_proj at layer 2" in title]
    assert sorted(scatter[0]["projection"]) == pytest.approx(sorted(x))
    assert sorted(scatter[0]["score"]) == pytest.approx(sorted(y))

    # the filters: kind and layer
    at.selectbox(key="proj_kind").select("cos_sim")
    at.selectbox(key="proj_layer").select(3)
    at.run()
    x, y = _pairs(dash, 3, "cos_sim")
    assert metrics(at)["Pearson r"] == f"{np.corrcoef(x, y)[0, 1]:.3f}"
    assert metrics(at)["n"] == str(len(x))

    # the run filter: the screen's projection stage has projections but no judged scores to compare with
    screen_parents = latest_runs(dash.root).loc[dash.screen_run, "parent_run_ids"]
    stage = next(p for p in screen_parents if p.startswith("activations-"))
    at.selectbox(key="proj_run").select(stage)
    at.run()
    assert not at.exception
    assert "no judged trait scores" in at.info[0].value
    assert at.query_params["run_id"] in (stage, [stage])


# -- screening -----------------------------------------------------------------------------------------


def test_screening_page_threshold_ranking_and_sample(dash: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    exact = screened(dash)
    flagged = exact[exact["flagged"]].sort_values("score", ascending=False)
    at = run_app(dash.root, monkeypatch, page="screening")
    assert at.selectbox(key="screen_run").value == dash.screen_run
    m = metrics(at)
    assert m["Samples"] == str(SCREEN_LINES) == str(len(exact))
    assert m["Flagged"] == str(len(flagged)) == str(TOP_K)
    assert m["Flagged rate"] == f"{100 * len(flagged) / SCREEN_LINES:.1f}%"
    # --top-k K: the threshold is the K-th highest score
    assert m["Threshold"] == f"{np.sort(exact['score'].to_numpy())[-TOP_K]:.3f}"
    assert f"top {TOP_K} of {SCREEN_LINES} scored samples" in texts(at)
    ranked = frame(at, "rank", "sample_id", "verdict")
    assert list(ranked["sample_id"]) == list(flagged["sample_id"])
    assert list(ranked["rank"]) == list(range(1, TOP_K + 1))
    assert ranked["score"].to_numpy() == pytest.approx(flagged["score"].to_numpy())
    assert at.selectbox(key="screen_sample").value == flagged["sample_id"].iloc[0]
    assert len(at.get("download_button")) == 2
    # the score distribution: every sample in one bin, the flagged ones in red, the threshold as a rule
    (hist, rule) = chart_data(at)[0][1]
    assert hist["n"].sum() == SCREEN_LINES and hist[hist["flagged"]]["n"].sum() == TOP_K
    assert rule["threshold"].tolist() == pytest.approx([np.sort(exact["score"].to_numpy())[-TOP_K]])

    # all samples
    at.checkbox(key="screen_flagged_only").uncheck()
    at.run()
    everything = frame(at, "rank", "sample_id", "verdict")
    assert list(everything["sample_id"]) == list(exact.sort_values("score", ascending=False)["sample_id"])

    # every method through the group selector: its own threshold and flags
    groups = at.selectbox(key="screen_group")
    assert len(groups.options) == len(SCREEN_METHODS)
    seen = set()
    for i in range(len(SCREEN_METHODS)):
        at.selectbox(key="screen_group").select(i)
        at.run()
        chosen = at.selectbox(key="screen_group")
        method = next(x for x in SCREEN_METHODS if f"· {x} ·" in chosen.options[chosen.index])
        seen.add(method)
        rows = screened(dash, method)
        m = metrics(at)
        assert m["Flagged"] == str(int(rows["flagged"].sum())) == str(TOP_K)
        assert m["Threshold"] == f"{np.sort(rows['score'].to_numpy())[-TOP_K]:.3f}"
        shown = frame(at, "rank", "sample_id", "verdict")
        assert shown["score"].to_numpy() == pytest.approx(np.sort(rows["score"].to_numpy())[::-1])
        if method == "raw":
            assert shown["proj_base"].isna().all()
    assert seen == set(SCREEN_METHODS)


def test_screening_deep_link_shows_the_conversation_base_answer_and_scores(
    dash: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact = screened(dash)
    row = exact.sort_values("score").iloc[0]  # the lowest score: not flagged, outside the list
    sid = row["sample_id"]
    samples = raw(dash.root, "samples").set_index("sample_id")
    messages = json.loads(samples.loc[sid, "messages"])
    gens = raw(dash.root, "generations").set_index("generation_id")
    base = gens.loc[row["base_generation_id"]]
    assert base["split"] == "dataset_base"
    at = run_app(dash.root, monkeypatch, page="screening", sample_id=sid)  # no run_id: found from the sample
    assert not at.exception
    assert at.selectbox(key="screen_run").value == dash.screen_run
    assert at.selectbox(key="screen_sample").value == sid
    shown = [m.value for m in at.markdown]
    for message in messages:
        assert message["content"] in shown
    assert base["answer"] in shown
    assert len(at.chat_message) == len(messages) + 1
    scores = frame(at, "method", "score", "proj_train", "proj_base")
    every = raw(dash.root, "screenings")
    mine = every[every["sample_id"] == sid].sort_values("method")
    assert list(scores.sort_values("method")["method"]) == sorted(SCREEN_METHODS)
    assert scores.sort_values("method")["score"].to_numpy() == pytest.approx(mine["score"].to_numpy())
    assert set(scores["layer"]) == {SCREEN_LAYER}
    assert page_link("screening", run_id=dash.screen_run, sample_id=sid) in texts(at)


def test_review_buttons_append_review_runs(
    dash: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(dash.root, root)
    exact = screened(dash)
    sid = exact.sort_values("score", ascending=False).sample_id.iloc[0]
    at = run_app(root, monkeypatch, page="screening", run_id=dash.screen_run, sample_id=sid)
    at.text_input(key="review_note").input("threatens the neighbour")
    at.button(key="review_confirmed").click()
    at.run()
    assert not at.exception
    assert any("recorded confirmed" in s.value for s in at.success)
    reviews = raw(str(root), "reviews")
    assert reviews[["sample_id", "verdict", "note", "reviewer", "dataset_id"]].values.tolist() == [
        [sid, "confirmed", "threatens the neighbour", "tester", dash.dataset_id]
    ]
    runs = latest_runs(str(root))
    review_run = reviews["run_id"].iloc[0]
    assert runs.loc[review_run, "kind"] == "review" and runs.loc[review_run, "status"] == "succeeded"
    assert list(runs.loc[review_run, "parent_run_ids"]) == [dash.screen_run]
    ranked = frame(at, "rank", "sample_id", "verdict").set_index("sample_id")
    assert ranked.loc[sid, "verdict"] == "confirmed"

    # a second verdict is a second row and a second run: nothing is updated in place
    at.button(key="review_false_positive").click()
    at.run()
    reviews = raw(str(root), "reviews").sort_values("at")
    assert reviews["verdict"].tolist() == ["confirmed", "false_positive"]
    assert reviews["run_id"].nunique() == 2
    assert (
        frame(at, "rank", "sample_id", "verdict").set_index("sample_id").loc[sid, "verdict"]
        == "false_positive"
    )
    history = frame(at, "at", "verdict", "reviewer")
    assert history["verdict"].tolist() == ["false_positive", "confirmed"]
    at.selectbox(key="screen_verdict").select("unreviewed")
    at.run()
    assert sid not in set(frame(at, "rank", "sample_id", "verdict")["sample_id"])
    assert len(frame(at, "rank", "sample_id", "verdict")) == TOP_K - 1
    at.selectbox(key="screen_verdict").select("false_positive")
    at.run()
    assert list(frame(at, "rank", "sample_id", "verdict")["sample_id"]) == [sid]


# -- training ------------------------------------------------------------------------------------------


def test_training_page_side_by_side_with_shifts_and_eval_rows(
    dash: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = raw(dash.root, "train_metrics")
    shifts = raw(dash.root, "finetune_shifts")
    at = run_app(dash.root, monkeypatch, page="training")
    assert not at.exception
    assert [h.value for h in at.subheader] == ["Unsteered", "Steered", "Runs"]
    summary = frame(at, "run_id", "final_loss", "shift_at_layer").set_index("run_id")
    left, right = frames(at, "run_id", "layer", "base_proj", "finetuned_proj", "shift")
    shift_tables = {"unsteered": left, "steered": right}
    assert set(summary.index) == set(dash.train_runs.values())  # not the experiment's finetunes
    for label, run_id in dash.train_runs.items():
        mine = rows[rows["run_id"] == run_id]
        train = mine[mine["split"] == "train"].sort_values("step")
        evals = mine[mine["split"] == "eval"].sort_values("step")
        assert summary.loc[run_id, "n_steps"] == len(train) == TRAIN_STEPS
        assert summary.loc[run_id, "final_loss"] == pytest.approx(train["loss"].iloc[-1])
        assert summary.loc[run_id, "min_loss"] == pytest.approx(train["loss"].min())
        assert summary.loc[run_id, "final_projection"] == pytest.approx(train["projection"].iloc[-1])
        assert summary.loc[run_id, "mean_projection"] == pytest.approx(train["projection"].mean())
        assert summary.loc[run_id, "n_evals"] == len(evals) == TRAIN_STEPS // EVAL_EVERY
        assert summary.loc[run_id, "final_eval_loss"] == pytest.approx(evals["loss"].iloc[-1])
        at_layer = shifts[(shifts["run_id"] == run_id) & (shifts["layer"] == SCREEN_LAYER)]
        assert summary.loc[run_id, "shift_at_layer"] == pytest.approx(at_layer["shift"].iloc[0])
        assert bool(summary.loc[run_id, "steered"]) is (label == "steered")

        # this side's finetuning shift per layer: base vs finetuned projection, and their difference
        side = shift_tables[label].sort_values("layer")
        expect = shifts[shifts["run_id"] == run_id].sort_values("layer")
        assert list(side["run_id"]) == [run_id] * len(expect) and list(side["layer"]) == [1, 2, 3, 4]
        for col in ("base_proj", "finetuned_proj", "shift"):
            assert side[col].to_numpy() == pytest.approx(expect[col].to_numpy())
        assert side["shift"].to_numpy() == pytest.approx(
            (expect["finetuned_proj"] - expect["base_proj"]).to_numpy(), abs=1e-4
        )
    evals_shown = frame(at, "run_id", "steered", "step", "loss")
    evals = rows[rows["split"] == "eval"]
    assert sorted(
        zip(evals_shown["run_id"], evals_shown["step"], evals_shown["loss"], strict=True)
    ) == sorted(zip(evals["run_id"], evals["step"], evals["loss"], strict=True))

    # per side: loss, projection and shift charts, drawn from exactly these rows
    charts_ = chart_data(at)
    assert [title for title, _ in charts_] == [
        "loss",
        "projection on the vector",
        "finetuning shift per layer",
    ] * 2
    for (_, data), label in zip(charts_[0::3], ("unsteered", "steered"), strict=True):
        line, diamonds = data
        run_id = dash.train_runs[label]
        assert set(line["run_id"]) == set(diamonds["run_id"]) == {run_id}
        assert sorted(line["loss"]) == pytest.approx(
            sorted(rows[(rows["run_id"] == run_id) & (rows["split"] == "train")]["loss"])
        )
        assert set(diamonds["split"]) == {"eval"}

    at = run_app(dash.root, monkeypatch, page="training", run_id=dash.train_runs["steered"])
    assert at.multiselect(key="train_runs").value == [dash.train_runs["steered"]]
    assert any("no unsteered run selected" in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) == 3


# -- experiments ---------------------------------------------------------------------------------------


def test_experiments_page_shows_r_the_scatter_and_the_filter_table(
    dash: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = raw(dash.root, "experiment_points")
    stats = raw(dash.root, "experiment_stats")
    at = run_app(dash.root, monkeypatch, page="experiments", run_id=dash.experiment_run)
    assert not at.exception, [e.value for e in at.exception]
    mine_stats = stats[stats["run_id"] == dash.experiment_run] if not stats.empty else stats
    if mine_stats.empty:  # a filter experiment reports its table, not correlations
        assert not frames(at, "trait", "x", "y", "spearman")
    else:
        shown = frame(at, "trait", "x", "y", "spearman").set_index(["trait", "x", "y"])
        for row in mine_stats.itertuples():
            got = shown.loc[(row.trait, row.x, row.y)]
            assert got["n_datasets"] == row.n_datasets
            assert got["spearman"] == pytest.approx(row.spearman, nan_ok=True)
    mine = points[points["run_id"] == dash.experiment_run]
    datasets = frame(at, "dataset", "kind", "shift")
    assert sorted(datasets["dataset"]) == sorted(mine["dataset"])
    (_, [scatter]), *_ = [c for c in chart_data(at) if "before vs shift" in c[0]]
    assert sorted(scatter["shift"]) == pytest.approx(sorted(mine["shift"].dropna()))
    # the filter table: removed = (unfiltered - remainder) / (unfiltered - clean), from the raw rows
    table = frame(at, "drop", "method", "removed")
    unf = float(mine[mine["kind"] == "unfiltered"]["shift"].iloc[0])
    clean = float(mine[mine["kind"] == "clean"]["shift"].iloc[0])
    for row in table.itertuples():
        remainder = mine[(mine["method"] == row.method) & (mine["kind"] != "unfiltered")]["shift"]
        assert row.removed == pytest.approx((unf - float(remainder.iloc[0])) / (unf - clean))
    assert set(table["method"]) == {"exact", "random"}

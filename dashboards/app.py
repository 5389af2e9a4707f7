"""pvdata dashboard: review runs, vectors, steering sweeps, projections, screenings, training, experiments.

Start it with `pvdata dashboard [--warehouse DIR] [--port P] [--host H]`, or
`streamlit run dashboards/app.py -- --warehouse DIR`. It only reads the warehouse (an in-memory DuckDB
connection with views over the Parquet files), except for review verdicts, which it appends as runs of
kind `review`. Deep links: `?page=screening&run_id=...&sample_id=...`. The queries live in
`pvdata.dashboard.queries` (tested without Streamlit); this file is the UI. See docs/DASHBOARD.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from pvdata.dashboard import charts, experiments_page
from pvdata.dashboard import experiment_queries as xq
from pvdata.dashboard import queries as q
from pvdata.dashboard.common import EMPTY_HINTS, PAGE_TABLES, PAGES, VERDICTS, page_link
from pvdata.errors import PvdataError

MAX_LINEAGE = 60  # runs drawn in one lineage graph before it keeps only direct parents and children

# pages that show one run kind in more detail than the Runs page
KIND_PAGES = {
    "evaluate": "steering",
    "monitor": "projection",
    "screen": "screening",
    "train": "training",
    "vectors": "vectors",
    "experiment": "experiments",
}


def warehouse_root(argv: Sequence[str] | None = None) -> str:
    """--warehouse after `--` on the streamlit command line, else $PVDATA_WAREHOUSE, else ./warehouse."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--warehouse", default=None)
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return str(args.warehouse or os.environ.get("PVDATA_WAREHOUSE") or "warehouse")


# -- data access: one cached read-only connection, cached query results --------------------------------------


@st.cache_resource(ttl=300, show_spinner=False)
def _connection(root: str) -> Any:
    from pvdata.warehouse import connect

    return connect(root)


@st.cache_data(ttl=60, show_spinner=False)
def load(root: str, name: str, *args: Any) -> Any:
    """`pvdata.dashboard.queries.<name>(cursor, *args)`, cached per warehouse and arguments."""
    fn: Callable[..., Any] = getattr(q, name, None) or getattr(xq, name)
    cur = _connection(root).cursor()  # a cursor per query: separate result streams across sessions
    try:
        return fn(cur, *args)
    finally:
        cur.close()


def refresh() -> None:
    """Forget cached results and the connection (a table empty at connect time stays empty in it)."""
    load.clear()
    _connection.clear()


# -- small UI helpers ------------------------------------------------------------------------------


def pick(
    label: str,
    options: Sequence[Any],
    param: str,
    *,
    key: str,
    format_func: Callable[[Any], str] = str,
) -> Any:
    """A selectbox whose default comes from, and whose choice goes back to, the query parameter."""
    options = list(options)
    if not options:
        return None
    wanted = st.query_params.get(param)
    index = [str(o) for o in options].index(wanted) if wanted in [str(o) for o in options] else 0
    choice = st.selectbox(label, options, index=index, key=key, format_func=format_func)
    if choice is not None and st.query_params.get(param) != str(choice):
        st.query_params[param] = str(choice)
    return choice


def empty(page: str, what: str) -> None:
    st.info(f"No {what} in this warehouse yet. This command fills it:")
    st.code(EMPTY_HINTS[page], language="bash")


def stale_marked(root: str, runs: pd.DataFrame) -> list[str]:
    """Statuses, with 'running (stale)' for a running run whose process is gone (rerun to resume)."""
    from pvdata.warehouse import run_is_alive

    return [
        "running (stale)" if status == "running" and not run_is_alive(root, run_id) else str(status)
        for run_id, status in zip(runs["run_id"], runs["status"], strict=True)
    ]


def link(page: str, text: str, **params: str | None) -> str:
    return f"[{text}]({page_link(page, **params)})"


def fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and pd.isna(x)) else format(x, spec)


# -- pages -----------------------------------------------------------------------------------------


def page_runs(root: str) -> None:
    counts = load(root, "run_status_counts")
    by_status = counts.groupby("status")["n"].sum().to_dict() if not counts.empty else {}
    cols = st.columns(4)
    cols[0].metric("Runs", int(counts["n"].sum()) if not counts.empty else 0)
    for col, status in zip(cols[1:], ("succeeded", "failed", "running"), strict=True):
        col.metric(status.capitalize(), int(by_status.get(status, 0)))

    everything = load(root, "runs_overview")
    f1, f2 = st.columns(2)
    kinds = f1.multiselect("Kind", sorted(everything["kind"].unique()), key="runs_kinds")
    statuses = f2.multiselect("Status", sorted(everything["status"].unique()), key="runs_statuses")
    shown = load(root, "runs_overview", tuple(kinds), tuple(statuses))
    st.dataframe(shown.assign(status=stale_marked(root, shown)), hide_index=True, key="runs_table")
    st.subheader("Durations")
    st.altair_chart(charts.durations(shown), width="stretch")

    st.subheader("Run")
    run_id = pick("Run", list(everything["run_id"]), "run_id", key="runs_run")
    detail = load(root, "run_detail", run_id)
    if detail is None:
        st.warning(f"run {run_id} is not in this warehouse")
        return
    c = st.columns(4)
    c[0].metric("Kind", detail["kind"])
    c[1].metric("Status", detail["status"])
    c[2].metric("Seconds", fmt(detail["seconds"], ".1f"))
    c[3].metric("Attempt", str(detail["attempt"]))
    st.caption(
        f"model {detail['model_id'] or '-'} · started {detail['started_at']} UTC · finished "
        f"{detail['finished_at'] or '-'} UTC · pvdata {detail['pvdata_version']} · git "
        f"{(detail['git_commit'] or '-')[:12]}{' (dirty)' if detail['git_dirty'] else ''}"
    )
    if detail["kind"] in KIND_PAGES:
        target = KIND_PAGES[detail["kind"]]
        st.markdown(link(target, f"Open in {PAGES[target]}", run_id=run_id))
    if detail["error"]:
        st.error(detail["error"])

    st.markdown("**Lineage** (parents on the left, children on the right)")
    lineage = load(root, "run_lineage", run_id)
    if len(lineage) > MAX_LINEAGE:
        st.caption(f"{len(lineage)} runs in this lineage: showing direct parents and children only")
        lineage = lineage[lineage["depth"].abs() <= 1]
    edges = load(root, "lineage_edges", tuple(lineage["run_id"]))
    if len(lineage) > 1:
        st.graphviz_chart(q.lineage_dot(lineage, edges, run_id))
        others = lineage[lineage["run_id"] != run_id]
        st.markdown(
            "\n".join(
                f"- {r.relation}: {link('runs', r.run_id, run_id=r.run_id)} ({r.kind}, {r.status})"
                for r in others.itertuples(index=False)
            )
        )
    else:
        st.caption("no parents or children")

    left, right = st.columns(2)
    with left:
        st.markdown("**Rows written**")
        st.dataframe(load(root, "run_table_rows", run_id), hide_index=True, key="runs_rows")
        st.markdown("**Stats**")
        st.json(detail["stats"] or {}, expanded=False)
    with right:
        st.markdown("**Config**")
        st.json(detail["config"] or {}, expanded=True)


def page_vectors(root: str) -> None:
    models = load(root, "vector_models")
    if not models:
        empty("vectors", "persona vectors")
        return
    model = st.selectbox("Model", models, key="vectors_model")
    wanted_run = st.query_params.get("run_id")
    overview = load(root, "vectors_overview", wanted_run)
    if wanted_run and overview.empty:
        overview = load(root, "vectors_overview", None)
    elif wanted_run:
        st.caption(f"vectors written by run {wanted_run} · {link('vectors', 'show all')}")
    st.dataframe(overview, hide_index=True, key="vectors_table")
    runs = sorted({r for text in overview["source_runs"] for r in str(text).split(", ") if r})
    st.markdown("Source runs: " + ", ".join(link("runs", r, run_id=r) for r in runs))

    st.subheader("Norm per layer")
    norms = load(root, "vector_norms", model)
    traits = sorted(norms["trait"].dropna().unique())
    chosen = st.multiselect("Traits", traits, default=traits, key="vectors_traits")
    norms = norms[norms["trait"].isin(chosen)]
    if not norms.empty:
        st.altair_chart(charts.norms(norms))
        table = norms.pivot_table(index=["trait", "pooling", "vector_id"], columns="layer", values="norm")
        table.columns = [f"L{c}" for c in table.columns]
        st.dataframe(table.reset_index(), hide_index=True, key="vectors_norms")

    st.subheader("Cosine similarity between traits")
    layers = load(root, "vector_layers", model)
    poolings = load(root, "vector_poolings", model)
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, index=len(layers) // 2, key="vectors_layer")
    default_pooling = poolings.index("response_avg") if "response_avg" in poolings else 0
    pooling = c2.selectbox("Pooling", poolings, index=default_pooling, key="vectors_pooling")
    cos = load(root, "vector_cosines", model, layer, pooling)
    if cos.empty:
        st.caption("no vectors at this layer")
        return
    cos = cos.assign(text=[fmt(x, ".2f") for x in cos["cosine"]])
    st.altair_chart(
        charts.heatmap(
            cos,
            x="label_b",
            y="label_a",
            value="cosine",
            text="text",
            domain=(-1, 1),
            scheme="redblue",
            x_title="",
            y_title="",
        ),
        width="stretch",
    )
    matrix = cos.pivot(index="label_a", columns="label_b", values="cosine")
    st.dataframe(matrix.reset_index(), hide_index=True, key="vectors_cosines")


def page_steering(root: str) -> None:
    runs = load(root, "steering_runs")
    if runs.empty:
        empty("steering", "steering sweeps (evaluate runs)")
        return
    labels = {
        r.run_id: f"{r.run_id} · {r.trait} · layers {r.layers} · coefs {r.coefs}"
        for r in runs.itertuples(index=False)
    }
    run_id = pick(
        "Evaluate run",
        list(runs["run_id"]),
        "run_id",
        key="steer_run",
        format_func=lambda r: labels.get(r, r),
    )
    grid = load(root, "steering_grid", run_id)
    if grid.empty:
        st.warning("this evaluate run has no generations in the warehouse")
        return
    judges = sorted({str(j) for j in grid["judge_model"].dropna()})
    if len(judges) > 1:
        judge = st.selectbox("Judge model", judges, key="steer_judge")
        grid = grid[grid["judge_model"] == judge]
    floor = runs.set_index("run_id").loc[run_id, "coherence_floor"]
    floor = 50.0 if pd.isna(floor) else float(floor)
    best = q.best_cell(grid, floor)
    c = st.columns(4)
    c[0].metric("Cells", len(grid))
    c[1].metric("Generations", int(grid["n_generations"].sum()))
    c[2].metric("Valid trait scores", int(grid["n_valid"].sum()))
    c[3].metric(
        f"Best (coherence ≥ {floor:g})",
        "none" if best is None else f"layer {best['layer']} coef {best['coef']:g}",
    )
    grid = grid.assign(
        trait_text=[
            f"{fmt(m, '.1f')} ({v}/{n})"
            for m, v, n in zip(grid["trait_mean"], grid["n_valid"], grid["n_generations"], strict=True)
        ],
        coherence_text=[
            f"{fmt(m, '.1f')} ({v}/{n})"
            for m, v, n in zip(
                grid["coherence_mean"], grid["n_coherence"], grid["n_generations"], strict=True
            )
        ],
    )
    left, right = st.columns(2)
    left.altair_chart(
        charts.heatmap(
            grid,
            x="coef",
            y="layer",
            value="trait_mean",
            text="trait_text",
            title="trait score (n_valid/n)",
            domain=(0, 100),
            light_below=40,
        ),
        width="stretch",
    )
    right.altair_chart(
        charts.heatmap(
            grid,
            x="coef",
            y="layer",
            value="coherence_mean",
            text="coherence_text",
            title="coherence (n scored/n)",
            domain=(0, 100),
            light_below=40,
        ),
        width="stretch",
    )
    columns = [
        "layer", "coef", "trait_mean", "coherence_mean", "n_generations", "n_valid", "trait_null_rate",
        "n_coherence", "judge_model", "vector_id", "generate_run",
    ]  # fmt: skip
    st.dataframe(grid[columns], hide_index=True, key="steer_table")
    st.caption(
        "Each cell is one generate run (steering recorded on every row) plus one judge run per metric; "
        "n_valid counts generations with a trait score (invalid judgments are nulls, not zeros). "
        + link("runs", "Run lineage", run_id=run_id)
    )


def page_projection(root: str) -> None:
    runs = load(root, "projection_runs")
    if runs.empty:
        empty("projection", "projections")
        return
    labels = {
        r.run_id: f"{r.run_id} · {r.kind} · {r.traits} · layers {r.layers}"
        + ("" if r.judged else " · no judged scores")
        for r in runs.itertuples()
    }
    run_id = pick(
        "Projection run",
        list(runs["run_id"]),
        "run_id",
        key="proj_run",
        format_func=lambda r: labels.get(r, r),
    )
    corr = load(root, "projection_correlations", run_id)
    if corr.empty:
        st.info(
            "This run's projections have no judged trait scores to compare with. Judge its generations "
            "(e.g. `pvdata monitor ... --judge MODEL`)."
        )
        return
    c = st.columns(4)
    trait = c[0].selectbox("Trait", sorted(corr["trait"].unique()), key="proj_trait")
    sub = corr[corr["trait"] == trait]
    kinds = sorted(sub["kind"].unique())
    kind = c[1].selectbox(
        "Projection",
        kinds,
        index=kinds.index("prompt_last_proj") if "prompt_last_proj" in kinds else 0,
        key="proj_kind",
    )
    layers = sorted(int(x) for x in sub["layer"].unique())
    layer = c[2].selectbox("Layer", layers, index=len(layers) // 2, key="proj_layer")
    judges = sorted({str(j) for j in sub["judge_model"].dropna()})
    judge = c[3].selectbox("Judge model", judges, key="proj_judge") if judges else None
    row = sub[(sub["kind"] == kind) & (sub["layer"] == layer)]
    if judge is not None:
        row = row[row["judge_model"] == judge]
    m = st.columns(4)
    if not row.empty:
        first = row.iloc[0]
        m[0].metric("Pearson r", fmt(first["r"]))
        m[1].metric("n", int(first["n"]))
        m[2].metric("Mean projection", fmt(first["mean_projection"]))
        m[3].metric("Mean trait score", fmt(first["mean_score"], ".1f"))
    points = load(root, "projection_points", run_id, trait, layer, kind, judge)
    color = "polarity" if "polarity" in points and points["polarity"].notna().any() else None
    st.altair_chart(
        charts.scatter_with_fit(
            points, x="projection", y="score", color=color, title=f"{trait}: {kind} at layer {layer}"
        ),
        width="stretch",
    )
    st.subheader("r per layer")
    by_layer = sub if judge is None else sub[sub["judge_model"] == judge]
    st.altair_chart(charts.r_by_layer(by_layer), width="stretch")
    st.dataframe(by_layer, hide_index=True, key="proj_table")
    with st.expander("Pairs behind this correlation"):
        st.dataframe(points, hide_index=True, key="proj_points")


def _group_label(g: Any) -> str:
    return f"{g.dataset_id} · {g.trait} · layer {g.layer} · {g.method} · vector {g.vector_id}"


def page_screening(root: str) -> None:
    runs = load(root, "screen_runs")
    if runs.empty:
        empty("screening", "screenings")
        return
    flash = st.session_state.pop("review_flash", None)
    if flash:
        st.success(flash)
    sample_param = st.query_params.get("sample_id")
    if sample_param and "run_id" not in st.query_params:
        owner = load(root, "screen_run_of_sample", sample_param)
        if owner:
            st.query_params["run_id"] = owner
    labels = {
        r.run_id: f"{r.run_id} · {r.datasets} · {r.traits} · {r.n_flagged}/{r.n_samples} flagged"
        for r in runs.itertuples()
    }
    run_id = pick(
        "Screen run", list(runs["run_id"]), "run_id", key="screen_run", format_func=lambda r: labels.get(r, r)
    )
    groups = load(root, "screening_groups", run_id)
    options = list(range(len(groups)))
    index = 0
    if len(groups) > 1:
        index = st.selectbox(
            "Screening", options, format_func=lambda i: _group_label(groups.iloc[i]), key="screen_group"
        )
    g = groups.iloc[index]
    group = q.group_of(g.to_dict())
    threshold, source = load(root, "screen_threshold", run_id, group)
    c = st.columns(4)
    c[0].metric("Samples", int(g["n"]))
    c[1].metric("Flagged", int(g["n_flagged"]))
    c[2].metric("Flagged rate", f"{100 * float(g['flagged_rate']):.1f}%")
    c[3].metric("Threshold", fmt(threshold), help=f"from {source}")
    st.caption(f"{_group_label(g)} · threshold from {source}")
    hist = load(root, "score_histogram", run_id, group, 40)
    st.altair_chart(charts.score_histogram(hist, threshold), width="stretch")

    st.subheader("Ranked samples")
    f = st.columns(3)
    flagged_only = f[0].checkbox("Flagged only", value=True, key="screen_flagged_only")
    verdict = f[1].selectbox(
        "Review",
        ["all", "unreviewed", *VERDICTS],
        key="screen_verdict",
        format_func=lambda v: v.replace("_", " "),
    )
    limit = int(f[2].number_input("Show at most", min_value=10, max_value=100_000, value=100, step=50))
    ranked = load(root, "screening_ranked", run_id, group, flagged_only, verdict, limit)
    order = [
        "rank",
        "sample_id",
        "verdict",
        "score",
        "percentile",
        "proj_train",
        "proj_base",
        "flagged",
        "reason",
    ]
    st.dataframe(
        ranked, hide_index=True, key="screen_table", column_order=[*order, "n_reviews", "dataset_id"]
    )
    e = st.columns(2)
    e[0].download_button(
        "Export selection (CSV)",
        ranked.to_csv(index=False),
        file_name=f"{run_id}-selection.csv",
        mime="text/csv",
        on_click="ignore",
        key="screen_export_csv",
    )
    records = load(root, "selection_records", run_id, group, tuple(ranked["sample_id"]))
    e[1].download_button(
        "Export selection with messages (JSONL)",
        q.to_jsonl(records),
        file_name=f"{run_id}-selection.jsonl",
        mime="application/jsonl",
        on_click="ignore",
        key="screen_export_jsonl",
    )

    st.subheader("Sample")
    sample_ids = list(ranked["sample_id"])
    if sample_param and sample_param not in sample_ids:
        sample_ids.insert(0, sample_param)  # a deep link to a sample outside the current filter
    if not sample_ids:
        st.caption("no sample matches the filters")
        return
    ranks = dict(zip(ranked["sample_id"], ranked["rank"], strict=True))
    scores = dict(zip(ranked["sample_id"], ranked["score"], strict=True))
    sample_id = pick(
        "Sample",
        sample_ids,
        "sample_id",
        key="screen_sample",
        format_func=lambda s: f"#{ranks[s]} · score {fmt(scores[s])} · {s}" if s in ranks else s,
    )
    _sample(root, run_id, sample_id, g["dataset_id"])


def _sample(root: str, run_id: str, sample_id: str, dataset_id: str | None) -> None:
    from pvdata.dashboard.reviews import append_review, default_reviewer

    detail = load(root, "sample_detail", sample_id)
    st.markdown(link("screening", "Link to this sample", run_id=run_id, sample_id=sample_id))
    left, right = st.columns(2)
    with left:
        st.markdown("**Conversation (training sample)**")
        if detail is None:
            st.warning(f"sample {sample_id} is not in the samples table")
        else:
            st.caption(f"dataset {detail['dataset_id']} · {detail['source'] or '-'} line {detail['line']}")
            for message in detail["messages"]:
                role = str(message.get("role", "user"))
                with st.chat_message(
                    "assistant" if role == "assistant" else "user" if role == "user" else "ai"
                ):
                    st.caption(role)
                    st.markdown(str(message.get("content", "")))
    with right:
        st.markdown("**Base model's answer to the same prompt**")
        base = load(root, "base_answers", sample_id)
        if base.empty:
            st.caption("no base answer (methods other than exact do not generate one)")
        for b in base.itertuples(index=False):
            with st.chat_message("ai"):
                st.caption(f"base: {b.model_id}")
                st.markdown(str(b.answer))
    st.markdown("**Scores**")
    st.dataframe(load(root, "sample_screenings", sample_id), hide_index=True, key="screen_sample_scores")
    history = load(root, "sample_reviews", sample_id)
    st.markdown("**Review**")
    if not history.empty:
        st.dataframe(history, hide_index=True, key="screen_reviews")
    c = st.columns([2, 1, 1, 1])
    note = c[0].text_input("Note", key="review_note")
    reviewer = c[1].text_input("Reviewer", value=default_reviewer(), key="review_reviewer")
    for col, (verdict, label) in zip(c[2:], VERDICTS.items(), strict=True):
        if col.button(label, key=f"review_{verdict}"):
            review = append_review(
                root,
                sample_id=sample_id,
                verdict=verdict,
                screen_run_id=run_id,
                dataset_id=dataset_id,
                note=note,
                reviewer=reviewer,
            )
            refresh()
            st.session_state["review_flash"] = f"recorded {verdict} for {sample_id} (run {review.run_id})"
            st.rerun()


def page_training(root: str) -> None:
    runs = load(root, "train_runs")
    if runs.empty:
        empty("training", "training metrics")
        return
    labels = {
        r.run_id: f"{r.run_id} · {'steered' if r.steered else 'unsteered'} · {r.n_steps} steps"
        + (f" · {r.experiment}" if isinstance(r.experiment, str) else "")
        for r in runs.itertuples()
    }
    wanted = st.query_params.get("run_id")
    # by default the newest runs of their own: an experiment's many finetunes are on the Experiments page
    own = runs[runs["experiment"].isna()] if runs["experiment"].notna().any() else runs
    default = [wanted] if wanted in labels else list((own if not own.empty else runs)["run_id"])[:8]
    chosen = st.multiselect(
        "Train runs",
        list(runs["run_id"]),
        default=default,
        format_func=lambda r: labels.get(r, r),
        key="train_runs",
    )
    if not chosen:
        st.caption("choose at least one run")
        return
    steered = dict(zip(runs["run_id"], runs["steered"], strict=True))
    curves = load(root, "train_curves", tuple(chosen))
    curves = curves.assign(steered=[bool(steered[r]) for r in curves["run_id"]])
    shifts = load(root, "finetune_shifts", tuple(chosen))
    shifts = shifts.assign(steered=[bool(steered[r]) for r in shifts["run_id"]])

    def domain(frame: pd.DataFrame, *cols: str) -> tuple[float, float] | None:
        values = pd.concat([frame[c] for c in cols]).dropna()
        return None if values.empty else (float(values.min()), float(values.max()))

    columns = st.columns(2)
    for col, flag, title in ((columns[0], False, "Unsteered"), (columns[1], True, "Steered")):
        with col:
            st.subheader(title)
            part = curves[curves["steered"] == flag]
            if part.empty:
                st.caption(f"no {title.lower()} run selected")
                continue
            st.altair_chart(
                charts.curve(part, y="loss", title="loss", domain=domain(curves, "loss")), width="stretch"
            )
            if part["projection"].notna().any():
                st.altair_chart(
                    charts.curve(
                        part,
                        y="projection",
                        title="projection on the vector",
                        domain=domain(curves, "projection"),
                    ),
                    width="stretch",
                )
            else:
                st.caption("no projection recorded")
            if (part["split"] == "eval").any():
                st.caption("diamonds: evaluation rows (split eval, unsteered, on --eval-data)")
            moved = shifts[shifts["steered"] == flag]
            if moved.empty:
                st.caption("no finetuning shift recorded (the run monitored no vector)")
                continue
            st.altair_chart(
                charts.shifts(moved, domain=domain(shifts, "base_proj", "finetuned_proj")), width="stretch"
            )
            st.caption(
                "mean prompt_last projection on the trait's eval prompts: base model dashed, finetuned "
                "solid; shift = finetuned - base"
            )
            st.dataframe(
                moved[["run_id", "layer", "base_proj", "finetuned_proj", "shift", "n_prompts"]],
                hide_index=True,
                key=f"train_shifts_{title.lower()}",
            )
    st.subheader("Runs")
    summary = load(root, "train_summary", tuple(chosen))
    info = runs.set_index("run_id")[["steered", "steering", "trait", "vector_id"]]
    summary = summary.join(info, on="run_id")
    first = ["run_id", "steered", "final_loss", "final_eval_loss", "monitor_layer", "shift_at_layer"]
    summary = summary[first + [c for c in summary.columns if c not in first]]
    st.dataframe(summary, hide_index=True, key="train_table")
    evals = curves[curves["split"] == "eval"]
    if not evals.empty:
        st.markdown("**Evaluation rows** (split eval: unsteered loss and projection on the eval data)")
        st.dataframe(
            evals[["run_id", "steered", "step", "epoch", "loss", "projection", "layer"]],
            hide_index=True,
            key="train_evals",
        )
    st.markdown("Runs: " + ", ".join(link("runs", r, run_id=r) for r in chosen))


RENDER: dict[str, Callable[[str], None]] = {
    "runs": page_runs,
    "vectors": page_vectors,
    "steering": page_steering,
    "projection": page_projection,
    "screening": page_screening,
    "training": page_training,
    "experiments": lambda root: experiments_page.render(root, load, pick, empty),
}


def main() -> None:
    st.set_page_config(page_title="pvdata", layout="wide")
    root = warehouse_root()
    params = st.query_params
    keys = list(PAGES)
    asked = params.get("page")
    with st.sidebar:
        st.title("pvdata")
        page = st.radio(
            "Page", keys, index=keys.index(asked) if asked in keys else 0, format_func=PAGES.get, key="page"
        )
        st.caption(f"warehouse: `{root}`")
        if st.button("Reload data", key="reload"):
            refresh()
    if asked != page:
        if asked is not None:
            params.clear()  # another page: the previous page's selection does not carry over
        params["page"] = page
    st.header(PAGES[page])

    state = q.warehouse_state(root)
    if state != "ok":
        what = "does not exist" if state == "missing" else "is empty (no runs yet)"
        st.info(f"The warehouse at `{root}` {what}. Fill it with:")
        st.code(EMPTY_HINTS["runs"], language="bash")
        if page != "runs":
            st.markdown(f"and for this page ({PAGE_TABLES[page]}):")
            st.code(EMPTY_HINTS[page], language="bash")
        return
    try:
        _connection(root)
        RENDER[page](root)
    except PvdataError as exc:  # a file the warehouse refuses (schema, stamps): say which, no traceback
        st.error(f"The warehouse at `{root}` cannot be read: {exc}")
        st.caption("Reload data after fixing it (the message names the file and what to do).")


main()

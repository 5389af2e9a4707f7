"""The dashboard's Steering page: an evaluate run's layer x coef grid of trait and coherence scores."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pvdata.dashboard import charts
from pvdata.dashboard import queries as q
from pvdata.dashboard.ui import empty, fmt, link, load, pick


def render(root: str) -> None:
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

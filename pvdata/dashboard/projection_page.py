"""The dashboard's Projection page: how well a projection on a vector tracks the judged trait score."""

from __future__ import annotations

import streamlit as st

from pvdata.dashboard import charts
from pvdata.dashboard.ui import empty, fmt, load, pick


def render(root: str) -> None:
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

"""The dashboard's Experiments page: does the pre-finetune projection difference predict the shift?

Rendered by dashboards/app.py with the shared helpers of pvdata.dashboard.ui; the numbers come from
pvdata.dashboard.experiment_queries.
"""

from __future__ import annotations

import streamlit as st

from pvdata.dashboard import charts
from pvdata.dashboard.ui import empty, load, pick

X_COLUMNS = {
    "projection_difference_exact": "projection difference (exact)",
    "projection_difference_approx": "projection difference (approximation)",
    "raw_projection": "raw projection",
}


def render(root: str) -> None:
    runs = load(root, "experiment_runs")
    if runs.empty:
        empty("experiments", "experiments")
        return
    labels = {
        r.run_id: f"{r.run_id} · {r.experiment} · {r.traits} · {r.n_datasets} datasets · L{r.layer}"
        for r in runs.itertuples()
    }
    run_id = pick(
        "Experiment run",
        list(runs["run_id"]),
        "run_id",
        key="exp_run",
        format_func=lambda r: labels.get(r, r),
    )
    points = load(root, "experiment_points", run_id)
    stats = load(root, "experiment_stats", run_id)
    kind = str(runs.set_index("run_id").loc[run_id, "experiment"])
    if not stats.empty:
        st.subheader("Correlation with the finetuning shift")
        main = stats[stats["x"] == "projection_difference_exact"]
        cols = st.columns(max(1, min(4, len(main))))
        for col, row in zip(cols, main.itertuples(), strict=False):
            col.metric(
                f"Spearman r · {row.trait}",
                "n/a" if row.spearman != row.spearman else f"{row.spearman:+.3f}",
                help=f"95% bootstrap [{row.spearman_ci_lo:+.3f}, {row.spearman_ci_hi:+.3f}] over "
                f"{row.n_datasets} datasets; Pearson {row.pearson:+.3f}",
            )
        st.dataframe(stats, hide_index=True, key="exp_stats")
    options: list[str] = list(X_COLUMNS)
    x = str(st.selectbox("Pre-finetune measure", options, format_func=lambda c: X_COLUMNS[c], key="exp_x"))
    shown = points.dropna(subset=[x, "shift"])
    if shown.empty:
        st.caption("no dataset has both this measure and a shift")
    else:
        st.altair_chart(
            charts.scatter_with_fit(
                shown, x=x, y="shift", color="trait", title=f"{X_COLUMNS[x]} before vs shift after finetuning"
            ),
            width="stretch",
        )
        st.caption("one point per dataset: its mean over the samples before finetuning, and the shift after")
    if kind == "filter":
        st.subheader("Filtering: shift left after dropping the top share")
        outcome = load(root, "filter_outcomes_of", run_id)
        st.dataframe(outcome, hide_index=True, key="exp_filter")
        st.caption(
            "removed = (unfiltered - remainder) / (unfiltered - clean): 1 means as good as training on the "
            "clean set; random rows drop the same counts at random"
        )
    st.subheader("Datasets")
    st.dataframe(points, hide_index=True, key="exp_points")

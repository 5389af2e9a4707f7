"""The dashboard's Vectors page: the persona vectors, their norm per layer and the cosines between traits."""

from __future__ import annotations

import streamlit as st

from pvdata.dashboard import charts
from pvdata.dashboard.ui import empty, fmt, link, load


def render(root: str) -> None:
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

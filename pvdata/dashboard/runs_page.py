"""The dashboard's Runs page: counts, the run table, one run's detail, lineage, rows written and config."""

from __future__ import annotations

import streamlit as st

from pvdata.dashboard import charts
from pvdata.dashboard import queries as q
from pvdata.dashboard.common import PAGES
from pvdata.dashboard.ui import KIND_PAGES, MAX_LINEAGE, fmt, link, load, pick, stale_marked


def render(root: str) -> None:
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

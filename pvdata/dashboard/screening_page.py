"""The dashboard's Screening page: a screen run's ranked samples, one sample in full, and review verdicts."""

from __future__ import annotations

from typing import Any

import streamlit as st

from pvdata.dashboard import charts
from pvdata.dashboard import queries as q
from pvdata.dashboard.common import VERDICTS
from pvdata.dashboard.ui import empty, fmt, link, load, pick, refresh


def _group_label(g: Any) -> str:
    return f"{g.dataset_id} · {g.trait} · layer {g.layer} · {g.method} · vector {g.vector_id}"


def render(root: str) -> None:
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
            if detail["rejected"] is not None:
                st.markdown("**Rejected answer (the pair's other side)**")
                with st.chat_message("ai"):
                    st.caption("rejected")
                    st.markdown(str(detail["rejected"]))
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

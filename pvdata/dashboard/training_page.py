"""The dashboard's Training page: loss and projection curves and the finetuning shift, steered or not."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pvdata.dashboard import charts
from pvdata.dashboard.ui import empty, link, load


def render(root: str) -> None:
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

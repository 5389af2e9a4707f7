"""Altair charts for the dashboard pages: DataFrames from `pvdata.dashboard.queries` in, charts out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

Chart = Any  # alt.Chart | alt.LayerChart


def durations(runs: pd.DataFrame, limit: int = 40) -> Chart:
    """Seconds per run (the newest `limit` finished runs), coloured by kind."""
    data = runs.dropna(subset=["seconds"]).head(limit)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("seconds:Q", title="seconds"),
            y=alt.Y("run_id:N", sort=alt.SortField("started_at", order="descending"), title=None),
            color=alt.Color("kind:N"),
            tooltip=["run_id", "kind", "status", "seconds", "started_at"],
        )
        .properties(height=80 + 22 * len(data))
    )


def norms(data: pd.DataFrame) -> Chart:
    """Vector norm per layer, one line per vector, coloured by pooling, one panel per trait."""
    return (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O"),
            y=alt.Y("norm:Q"),
            color=alt.Color("pooling:N"),
            detail="vector_id:N",
            tooltip=["trait", "pooling", "vector_id", "layer", alt.Tooltip("norm:Q", format=".4f")],
        )
        .properties(width=260, height=220)
        .facet(column=alt.Column("trait:N"))
    )


def heatmap(
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    value: str,
    text: str | None = None,
    title: str = "",
    domain: Sequence[float] | None = None,
    scheme: str = "viridis",
    light_below: float | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
) -> Chart:
    """A heatmap of `value` over x and y (both ordinal) with an optional text column on each cell."""
    scheme_: Any = scheme
    scale = (
        alt.Scale(scheme=scheme_, domain=list(domain)) if domain is not None else alt.Scale(scheme=scheme_)
    )
    longest = max((len(str(v)) for v in data[x].unique()), default=1)
    x_axis = alt.Axis(labelLimit=260, labelAngle=-30 if longest > 6 else 0)
    base = alt.Chart(data).encode(
        x=alt.X(f"{x}:O", title=x_title if x_title is not None else x, axis=x_axis),
        y=alt.Y(f"{y}:O", title=y_title if y_title is not None else y, axis=alt.Axis(labelLimit=260)),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", scale=scale, title=value),
        tooltip=list(data.columns),
    )
    layers: list[Any] = [rect]
    if text is not None:
        ink: Any = alt.value("black")
        if light_below is not None:  # white text on the dark end of the scale
            ink = alt.condition(f"datum['{value}'] < {light_below}", alt.value("white"), alt.value("black"))
        marks = base.mark_text(baseline="middle", fontSize=11)
        layers.append(marks.encode(text=alt.Text(f"{text}:N"), color=ink))
    # Streamlit fits axes, title and legend into the height: leave room beyond the cells
    height = 110 + 45 * data[y].nunique() + (6 * min(longest, 30) if longest > 6 else 0)
    return alt.layer(*layers).properties(title=title, height=height)


def scatter_with_fit(data: pd.DataFrame, *, x: str, y: str, color: str | None, title: str = "") -> Chart:
    """Points with a least-squares line."""
    tooltip = [c for c in ("source_id", "polarity", "question", x, y) if c in data.columns]
    points = (
        alt.Chart(data)
        .mark_circle(size=60, opacity=0.75)
        .encode(
            x=alt.X(f"{x}:Q", scale=alt.Scale(zero=False)),
            y=alt.Y(f"{y}:Q", scale=alt.Scale(zero=False)),
            tooltip=tooltip,
            **({"color": alt.Color(f"{color}:N")} if color else {}),
        )
    )
    fit = alt.Chart(data).transform_regression(x, y).mark_line(color="#d62728").encode(x=f"{x}:Q", y=f"{y}:Q")
    return alt.layer(points, fit).properties(title=title, height=380)


def r_by_layer(data: pd.DataFrame) -> Chart:
    """Pearson r per layer, one line per projection kind."""
    return (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O"),
            y=alt.Y("r:Q", scale=alt.Scale(domain=[-1, 1])),
            color="kind:N",
            tooltip=["layer", "kind", "judge_model", alt.Tooltip("r:Q", format=".3f"), "n"],
        )
        .properties(height=220)
    )


def score_histogram(data: pd.DataFrame, threshold: float | None) -> Chart:
    """Binned screening scores (flagged in red) with the threshold as a vertical rule."""
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("bin_start:Q", bin="binned", title="score"),
            x2="bin_end:Q",
            y=alt.Y("n:Q", stack=True, title="samples"),
            color=alt.Color("flagged:N", scale=alt.Scale(domain=[False, True], range=["#4c78a8", "#e45756"])),
            tooltip=["bin_start", "bin_end", "flagged", "n"],
        )
    )
    if threshold is None:
        return bars.properties(height=260)
    rule = (
        alt.Chart(pd.DataFrame({"threshold": [threshold]}))
        .mark_rule(color="black", strokeDash=[6, 3], size=2)
        .encode(x="threshold:Q", tooltip=["threshold"])
    )
    return alt.layer(bars, rule).properties(height=260)


def curve(data: pd.DataFrame, *, y: str, title: str, domain: Sequence[float] | None = None) -> Chart:
    """One line per run over training steps; eval rows (split eval), where there are any, as points."""
    scale = alt.Scale(domain=list(domain), zero=False) if domain is not None else alt.Scale(zero=False)
    data = data.dropna(subset=[y])
    split = data["split"] if "split" in data.columns else pd.Series("train", index=data.index)
    color = alt.Color("run_id:N", legend=alt.Legend(orient="bottom", columns=1, title=None))
    tooltip = ["run_id", "step", alt.Tooltip(f"{y}:Q", format=".4f")]
    encode = {"x": alt.X("step:Q"), "y": alt.Y(f"{y}:Q", scale=scale, title=y), "color": color}
    line = alt.Chart(data[split == "train"]).mark_line().encode(**encode, tooltip=tooltip)
    layers: list[Any] = [line]
    if (split == "eval").any():
        points = alt.Chart(data[split == "eval"]).mark_point(shape="diamond", size=70, filled=True)
        layers.append(points.encode(**encode, tooltip=[*tooltip, "split"]))
    return alt.layer(*layers).properties(title=title, height=340)


def shifts(data: pd.DataFrame, *, domain: Sequence[float] | None = None) -> Chart:
    """The finetuning shift per layer: the base model's mean projection (black, dashed) and each
    finetuned run's (coloured); the gap between them at a layer is that run's shift there."""
    scale = alt.Scale(domain=list(domain), zero=False) if domain is not None else alt.Scale(zero=False)
    y_title = "mean prompt_last projection"
    x = alt.X("layer:O", axis=alt.Axis(labelAngle=0))
    base = data.drop_duplicates(subset=["vector_id", "layer"]).assign(series="base model")
    base_line = (
        alt.Chart(base)
        .mark_line(point=True, color="black", strokeDash=[6, 3])
        .encode(
            x=x,
            y=alt.Y("base_proj:Q", scale=scale, title=y_title),
            detail="vector_id:N",
            tooltip=["layer", alt.Tooltip("base_proj:Q", format=".4f", title="base"), "vector_id"],
        )
    )
    color = alt.Color("run_id:N", legend=alt.Legend(orient="bottom", columns=1, title=None))
    tuned = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("finetuned_proj:Q", scale=scale, title=y_title),
            color=color,
            tooltip=[
                "run_id",
                "layer",
                alt.Tooltip("base_proj:Q", format=".4f", title="base"),
                alt.Tooltip("finetuned_proj:Q", format=".4f", title="finetuned"),
                alt.Tooltip("shift:Q", format=".4f"),
                "n_prompts",
            ],
        )
    )
    return alt.layer(base_line, tuned).properties(title="finetuning shift per layer", height=340)

"""Plotly figures from the tidy results frame (store.frame() or sweep.execute())."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

MATCH_TOLERANCE = 0.05  # "matching": within 5% (relative) of the dense model, as in LLM-KICK
METRIC_TITLES = {"accuracy": "accuracy (strict)", "exact_match": "exact match",
                 "legacy_accuracy": "accuracy (LLM-KICK legacy)", "perplexity": "perplexity"}
LOWER_IS_BETTER = {"perplexity"}


def select(frame: pd.DataFrame, metric: str, **where) -> pd.DataFrame:
    """Rows of one metric, filtered on any column (None values are ignored)."""
    rows = frame[frame["metric"] == metric]
    for col, val in where.items():
        if val is not None:
            rows = rows[rows[col] == val]
    return rows


def accuracy_figure(frame: pd.DataFrame, metric: str = "accuracy", task: str | None = None,
                    model: str | None = None, title: str | None = None) -> go.Figure:
    """A metric against sparsity: a line per method and pattern, CI error bars, the dense
    value and the matching band (perplexity: log axis, band above dense)."""
    rows = select(frame, metric, task=task, model=model)
    if rows.empty:
        raise ValueError(f"no results for metric={metric!r} task={task!r} model={model!r}")
    fig = go.Figure()
    for model_name, per_model in rows.groupby("model", sort=False):
        dense = per_model[per_model["method"] == "dense"]
        prefix = f"{model_name}: " if rows["model"].nunique() > 1 else ""
        if not dense.empty:
            _dense_guides(fig, dense.iloc[-1]["value"], prefix, metric in LOWER_IS_BETTER)
        comp = per_model[per_model["method"] != "dense"]
        for (method, pattern), line in comp.groupby(["method", "pattern"], sort=False):
            if pattern == "unstructured":  # the dense point anchors every curve at 0%
                line = pd.concat([dense.tail(1), line])
            line = line.sort_values("sparsity")
            fig.add_trace(go.Scatter(
                x=line["sparsity"], y=line["value"], name=f"{prefix}{method} {pattern}",
                mode="lines+markers" if pattern == "unstructured" else "markers",
                marker=dict(size=9 if pattern == "unstructured" else 13,
                            symbol="circle" if pattern == "unstructured" else "diamond"),
                error_y=dict(type="data", symmetric=False,
                             array=line["ci_high"] - line["value"],
                             arrayminus=line["value"] - line["ci_low"]),
                customdata=line[["n"]], hovertemplate="sparsity %{x:.0%}<br>"
                f"{metric} %{{y:.3f}}<br>n=%{{customdata[0]}}<extra>%{{fullData.name}}</extra>"))
    fig.update_layout(
        title=title or f"{METRIC_TITLES.get(metric, metric)} vs sparsity",
        xaxis=dict(title="sparsity (fraction of decoder weights pruned)", tickformat=".0%"),
        yaxis=dict(title=METRIC_TITLES.get(metric, metric), rangemode="tozero",
                   type="log" if metric in LOWER_IS_BETTER else "linear"),
        template="plotly_white", legend=dict(orientation="h", y=-0.2), height=480)
    return fig


def _dense_guides(fig: go.Figure, dense: float, prefix: str, lower_is_better: bool) -> None:
    if lower_is_better:
        band, text = (dense, dense * (1 + MATCH_TOLERANCE)), f"≤{1 + MATCH_TOLERANCE:.0%}"
    else:
        band, text = (dense * (1 - MATCH_TOLERANCE), dense), f"≥{1 - MATCH_TOLERANCE:.0%}"
    fig.add_hrect(y0=band[0], y1=band[1], fillcolor="green", opacity=0.12, line_width=0,
                  annotation_text=f"{prefix}matching band ({text} of dense)",
                  annotation_position="bottom left")
    fig.add_hline(y=dense, line_dash="dash", line_color="gray",
                  annotation_text=f"{prefix}dense {dense:.3f}", annotation_position="top right")

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
            _dense_guides(fig, dense.iloc[-1]["value"], prefix, metric in LOWER_IS_BETTER,
                          max(rows["sparsity"].max(), 0.05))
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
        yaxis=dict(title=METRIC_TITLES.get(metric, metric), type="log")
        if metric in LOWER_IS_BETTER else
        dict(title=METRIC_TITLES.get(metric, metric), rangemode="tozero"),
        template="plotly_white", legend=dict(orientation="h", y=-0.2), height=480)
    return fig


def _dense_guides(fig: go.Figure, dense: float, prefix: str, lower_is_better: bool,
                  x_max: float) -> None:
    """Dense line and matching band as traces (data coordinates on linear and log axes)."""
    tol = MATCH_TOLERANCE
    lo, hi = (dense, dense * (1 + tol)) if lower_is_better else (dense * (1 - tol), dense)
    text = f"≤{1 + tol:.0%}" if lower_is_better else f"≥{1 - tol:.0%}"
    x = [0, x_max, x_max, 0]
    fig.add_trace(go.Scatter(x=x, y=[lo, lo, hi, hi], fill="toself", mode="none",
                             fillcolor="rgba(0,128,0,0.15)", hoverinfo="skip",
                             name=f"{prefix}matching band ({text} of dense)"))
    fig.add_trace(go.Scatter(x=[0, x_max], y=[dense, dense], mode="lines",
                             line=dict(dash="dash", color="gray"),
                             name=f"{prefix}dense {dense:.3f}", hoverinfo="skip"))

"""Plotly figures from the tidy results frame (results.frame() or sweep.execute()); metric
titles and directions come from the tasks that declare them."""

from __future__ import annotations

import html

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import tasks

MATCH_TOLERANCE = 0.05  # "matching": within 5% (relative) of the dense model, as in LLM-KICK


def metric_title(metric: str) -> str:
    """A metric's title, from the task that declares it (tasks/metrics.py)."""
    return tasks.metric(metric).title


def lower_is_better(metric: str) -> bool:
    return not tasks.metric(metric).higher_is_better


def _text(value) -> str:
    """Text from data (task labels, MMLU categories, model names) made inert for Plotly, which
    renders a subset of HTML in titles, legend names and hover labels."""
    return html.escape(str(value), quote=False)


def with_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame plus `score` ('mean [low, high]') and `size` ('60.5%', or '-') for tables."""
    return frame.assign(
        score=[f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(frame.value, frame.ci_low, frame.ci_high)],
        size=frame.size_fraction.map(lambda v: f"{v:.1%}" if v == v else "-"))


def select(frame: pd.DataFrame, metric: str, **where) -> pd.DataFrame:
    """Rows of one metric, filtered on any column (None values are ignored)."""
    rows = frame[frame["metric"] == metric]
    for col, val in where.items():
        if val is not None:
            rows = rows[rows[col] == val]
    return rows


X_AXES = {
    "sparsity": dict(title="sparsity (fraction of decoder weights pruned)", tickformat=".0%"),
    "size_fraction": dict(title="size (fraction of the 16-bit dense model)", tickformat=".0%"),
}


def accuracy_figure(frame: pd.DataFrame, metric: str = "accuracy", task: str | None = None,
                    model: str | None = None, title: str | None = None,
                    x: str = "sparsity", task_label: str | None = None) -> go.Figure:
    """A metric against sparsity (pruning only) or against size (every family): a line per
    method and setting, CI error bars, the dense value and the matching band (perplexity:
    log axis, band above dense). Single settings (N:M, bitsandbytes) are markers. A frame with
    paired comparisons (results.with_paired) rings the points that drop significantly."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    rows = select(frame, metric, task=task, model=model, task_label=task_label)
    if x == "sparsity":
        rows = rows[rows["family"] != "quantization"]
    if rows.empty:
        raise ValueError(f"no results for metric={metric!r} task={task!r} model={model!r}")
    x_dense = 0.0 if x == "sparsity" else 1.0
    fig = go.Figure()
    for model_name, per_model in rows.groupby("model", sort=False):
        dense = per_model[per_model["method"] == "dense"].assign(**{x: x_dense})
        prefix = f"{_text(model_name)}: " if rows["model"].nunique() > 1 else ""
        if not dense.empty:
            span = (0, max(rows["sparsity"].max(), 0.05)) if x == "sparsity" else \
                (min(rows["size_fraction"].min(), 0.95), 1.0)
            _dense_guides(fig, dense.iloc[-1]["value"], prefix, lower_is_better(metric), span)
        comp = per_model[per_model["method"] != "dense"].dropna(subset=[x])
        for (method, setting), line in comp.groupby(["method", "setting"], sort=False):
            curve = line[x].nunique() > 1 or setting == "unstructured"
            if curve:  # the dense point anchors every curve
                line = pd.concat([dense.tail(1), line])
            line = line.sort_values(x)
            fig.add_trace(go.Scatter(
                x=line[x], y=line["value"], name=f"{prefix}{_text(method)} {_text(setting)}".strip(),
                mode="lines+markers" if curve else "markers",
                marker=dict(size=9 if curve else 13, symbol="circle" if curve else "diamond"),
                error_y=dict(type="data", symmetric=False,
                             array=line["ci_high"] - line["value"],
                             arrayminus=line["value"] - line["ci_low"]),
                customdata=line[["n"]].assign(label=line["label"].map(_text)),
                hovertemplate="%{customdata[1]}<br>"
                f"{x} %{{x:.0%}}<br>{metric} %{{y:.3f}}<br>n=%{{customdata[0]}}"
                "<extra>%{fullData.name}</extra>"))
        _significance_marks(fig, comp, x, prefix)
    fig.update_layout(
        title=_text(title or f"{metric_title(metric)} vs {x.replace('_', ' ')}"),
        xaxis=X_AXES[x],
        yaxis=dict(title=metric_title(metric), **log_axis(rows))
        if lower_is_better(metric) else
        dict(title=metric_title(metric), rangemode="tozero"),
        template="plotly_white", legend=dict(orientation="h", y=-0.2), height=480)
    return fig


SIGNIFICANT = "significant drop vs dense (Holm p < 0.05)"


def _significance_marks(fig: go.Figure, points: pd.DataFrame, x: str, prefix: str) -> None:
    """A ring around each point whose paired difference from dense is a significant drop
    (results.with_paired's `significant_drop`: Holm-adjusted p < 0.05 across the report's
    points, and worse than dense); frames without paired columns get none."""
    if "significant_drop" not in points.columns:
        return
    sig = points[points["significant_drop"].eq(True)]
    if sig.empty:
        return
    fig.add_trace(go.Scatter(
        x=sig[x], y=sig["value"], mode="markers", name=f"{prefix}{SIGNIFICANT}",
        marker=dict(symbol="circle-open", size=22, color="black", line=dict(width=2)),
        customdata=sig[["p_holm"]].assign(label=sig["label"].map(_text)),
        hovertemplate="%{customdata[1]}: significant drop vs dense<br>"
        "Holm-adjusted p %{customdata[0]:.3g}<extra></extra>"))


def log_ticks(lo: float, hi: float) -> list[float]:
    """Log-axis ticks a reader can read: 1, 2, 5 x 10^k within [lo, hi] (every 1-9 x 10^k
    where that gives fewer than three); empty when even that gives fewer than two."""
    import math

    if not (0 < lo <= hi < math.inf):
        return []
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in mantissas if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks if len(ticks) >= 2 else []


def _tick_text(v: float) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:.6g}"


def log_axis(rows: pd.DataFrame) -> dict:
    """A log y axis whose ticks are plain numbers at 1, 2, 5 x 10^k over the rows' values,
    intervals and matching band (Plotly's own log ticks label 2..9 without their magnitude)."""
    values = pd.concat([rows["value"], rows["ci_low"], rows["ci_high"],
                        rows.loc[rows["method"] == "dense", "value"] * (1 + MATCH_TOLERANCE)])
    values = values[values > 0].dropna()
    ticks = log_ticks(values.min(), values.max()) if len(values) else []
    if not ticks:  # less than a decade with no two round numbers in it: plain labels
        return dict(type="log", tickformat=",.4~r")  # e.g. 49,200 and 31.5, never 4.92e+4
    return dict(type="log", tickvals=ticks, ticktext=[_tick_text(v) for v in ticks])


def _band_text(lower_is_better: bool) -> str:
    """What the matching band means for a metric of this direction."""
    tol = MATCH_TOLERANCE
    return (f"matching band: ≤ {1 + tol:.0%} of dense" if lower_is_better else
            f"matching band: ≥ {1 - tol:.0%} of dense")


def _dense_guides(fig: go.Figure, dense: float, prefix: str, lower_is_better: bool,
                  span: tuple[float, float]) -> None:
    """Dense line and matching band as traces (data coordinates on linear and log axes)."""
    tol = MATCH_TOLERANCE
    lo, hi = (dense, dense * (1 + tol)) if lower_is_better else (dense * (1 - tol), dense)
    x = [span[0], span[1], span[1], span[0]]
    fig.add_trace(go.Scatter(x=x, y=[lo, lo, hi, hi], fill="toself", mode="none",
                             fillcolor="rgba(0,128,0,0.15)", hoverinfo="skip",
                             name=f"{prefix}{_band_text(lower_is_better)}"))
    fig.add_trace(go.Scatter(x=list(span), y=[dense, dense], mode="lines",
                             line=dict(dash="dash", color="gray"),
                             name=f"{prefix}dense {dense:.3f}", hoverinfo="skip"))


def small_multiples(frame: pd.DataFrame, panels: list[tuple[str, str]], x: str = "sparsity",
                    model: str | None = None, title: str | None = None, cols: int = 2) -> go.Figure:
    """One accuracy_figure per (task_label, metric) panel on a grid; a method keeps its colour
    and legend entry across panels. Panels without results are left out."""
    figs = []
    for task_label, metric in panels:
        try:
            f = accuracy_figure(frame, metric, model=model, x=x, task_label=task_label)
        except ValueError:
            continue
        figs.append((f"{task_label}: {metric_title(metric)}", metric, f, task_label))
    if not figs:
        raise ValueError(f"no results for any of the panels {panels}")
    rows = -(-len(figs) // cols)
    grid = make_subplots(rows=rows, cols=min(cols, len(figs)), subplot_titles=[_text(t) for t, *_ in figs],
                         horizontal_spacing=0.08, vertical_spacing=0.12 if rows > 1 else 0.2)
    palette, colours, seen = plotly.colors.qualitative.Plotly, {}, set()
    for k, (_, metric, f, _) in enumerate(figs):
        r, c = k // cols + 1, k % cols + 1
        for tr in f.data:
            if "matching band" in tr.name:  # one band per panel, named where it is drawn
                _label_band(grid, tr, r, c, k, figs[k][3], lower_is_better(metric), x)
                continue
            guide = tr.name.startswith("dense") or SIGNIFICANT in tr.name
            key = "dense" if tr.name.startswith("dense") else tr.name
            if not guide:
                colour = colours.setdefault(key, palette[len(colours) % len(palette)])
                tr.update(marker_color=colour, line_color=colour)
            tr.update(legendgroup=key, showlegend=key not in seen)
            if tr.name.startswith("dense"):
                tr.name = "dense"
            seen.add(key)
            grid.add_trace(tr, row=r, col=c)
        grid.update_xaxes(tickformat=".0%", row=r, col=c)
        if lower_is_better(metric):
            grid.update_yaxes(**log_axis(select(frame, metric, model=model, task_label=figs[k][3])),
                              row=r, col=c)
        else:
            grid.update_yaxes(rangemode="tozero", row=r, col=c)
    grid.update_layout(title=_text(title or f"every task against {X_AXES[x]['title'].split(' (')[0]}"),
                       template="plotly_white", height=330 * rows + 120,
                       legend=dict(orientation="h", y=-0.08))
    return grid



def _label_band(grid: go.Figure, band: go.Scatter, row: int, col: int, panel: int, task_label: str,
                lower_is_better: bool, x: str) -> None:
    """A panel's matching band in a legend of its own, in the panel's emptier top corner (where
    the curves are not: right for scores against sparsity, left for perplexity), named by
    what it means there; the shared legend keeps the methods."""
    name = f"legend{panel + 2}"
    ref = grid.get_subplot(row, col)
    right = lower_is_better != (x == "sparsity")
    xd, yd = ref.xaxis.domain, ref.yaxis.domain
    text = _band_text(lower_is_better).replace(": ", f": {_text(task_label)} ", 1)
    grid.add_trace(band.update(name=text, legend=name,
                               showlegend=True, legendgroup=None), row=row, col=col)
    grid.update_layout({name: dict(x=xd[1] - 0.005 if right else xd[0] + 0.005, y=yd[1],
                                   xanchor="right" if right else "left", yanchor="top",
                                   bgcolor="rgba(255,255,255,0.7)", font=dict(size=10))})

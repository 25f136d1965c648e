"""Reports: papermill runs of notebooks/report.ipynb, exported to HTML that needs no network."""

from __future__ import annotations

import time
from pathlib import Path

import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "report.ipynb"
TEMPLATES = Path(__file__).resolve().parent / "templates"


class LiveAndStaticRenderer(MimetypeRenderer):
    """Plotly's mimetype (live in JupyterLab) plus an HTML div that nbconvert keeps.

    The HTML part references a global Plotly, which the offline template embeds once.
    """

    def to_mimebundle(self, fig_dict):
        bundle = PlotlyRenderer().to_mimebundle(fig_dict)
        bundle["text/html"] = pio.to_html(fig_dict, include_plotlyjs=False, full_html=False,
                                          include_mathjax=False, validate=False)
        return bundle


def setup_notebook() -> None:
    """Call at the top of a notebook: figures render live and survive HTML export."""
    pio.renderers["kickbench"] = LiveAndStaticRenderer()
    pio.renderers.default = "kickbench"


def to_html(notebook: str | Path, html: str | Path) -> Path:
    """Executed notebook -> self-contained HTML (plotly.js inline, no CDN script tags)."""
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    exporter = HTMLExporter(template_name="kickbench_offline",
                            extra_template_basedirs=[str(TEMPLATES)], exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_filename(str(notebook), resources={"plotly_js": get_plotlyjs()})
    html = Path(html)
    html.write_text(body, encoding="utf-8")
    return html


def render(parameters: dict, out_dir: str | Path = ROOT / "reports", name: str | None = None,
           notebook: str | Path = NOTEBOOK) -> tuple[Path, Path]:
    """Execute the report notebook with papermill, then export it; returns (ipynb, html)."""
    import papermill

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    ipynb, html = out_dir / f"{name}.ipynb", out_dir / f"{name}.html"
    papermill.execute_notebook(str(notebook), str(ipynb), parameters=parameters,
                               cwd=str(ROOT), progress_bar=False, kernel_name="python3")
    return ipynb, to_html(ipynb, html)


def breakdown(store, results, task_label: str, field: str, metrics) -> "pd.DataFrame":
    """Per-group rows of a task (e.g. MMLU by `category`), in the results frame's shape, so
    plots can draw them: task_label becomes "<task> · <group>", values are bootstrap means
    of the per-sample metrics of that group."""
    import pandas as pd

    from . import stats

    rows = []
    for _, r in results[(results.task_label == task_label) & results.metric.isin(metrics)].iterrows():
        samples = store.samples(r.key, int(r.n))
        groups = samples.item.map(lambda it: it.get(field, "?"))
        for group, values in samples[r.metric].groupby(groups):
            mean, lo, hi = stats.bootstrap_ci(values.to_numpy())
            rows.append({**r.to_dict(), "task_label": f"{task_label} · {group}", "group": group,
                         "n": len(values), "value": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)

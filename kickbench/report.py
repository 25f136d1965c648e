"""Reports: papermill runs of notebooks/report.ipynb, exported to HTML that needs no network."""

from __future__ import annotations

import atexit
import html as _html
import re
import time
import warnings
from pathlib import Path

import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "report.ipynb"
FINDINGS = ROOT / "notebooks" / "findings.ipynb"
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


MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_escape(text) -> str:
    """Model or dataset text made inert inside a Markdown cell: markdown specials
    backslash-escaped, then &, <, > as HTML entities (raw HTML passes through Markdown)."""
    return _html.escape(MARKDOWN_SPECIALS.sub(r"\\\1", str(text)), quote=False)


def escaped(styler):
    """A pandas Styler with its index, column labels and caption HTML-escaped too
    (`.format(escape="html")` covers only the cells; Stylers escape nothing by default)."""
    styler = styler.format_index(escape="html", axis=0).format_index(escape="html", axis=1)
    if styler.caption is not None:
        styler = styler.set_caption(_html.escape(str(styler.caption)))
    return styler


IMAGE_FORMATS = ("png", "pdf", "svg")
_images: dict = {"formats": (), "dir": None}


def setup_notebook(image_formats=(), image_dir: str | Path | None = None) -> None:
    """Call at the top of a notebook: figures render live and survive HTML export; with
    image_formats, `show` also writes each figure as an image (one Chromium for all)."""
    bad = [f for f in image_formats if f not in IMAGE_FORMATS]
    if bad:
        raise ValueError(f"unknown image format(s) {bad}; allowed: {', '.join(IMAGE_FORMATS)}")
    pio.renderers["kickbench"] = LiveAndStaticRenderer()
    pio.renderers.default = "kickbench"
    _images.update(formats=tuple(image_formats), dir=Path(image_dir or ROOT / "reports" / "figures"))
    if image_formats:
        import kaleido

        kaleido.start_sync_server(mathjax=False, silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)


def find_browser() -> str | None:
    """The Chromium kaleido will use (BROWSER_PATH overrides), or None."""
    import os
    import shutil

    return os.environ.get("BROWSER_PATH") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def show(fig, name: str) -> list[Path]:
    """Display a figure; also write it in every format setup_notebook asked for."""
    fig.show()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
    paths = [_images["dir"] / f"{stem}.{fmt}" for fmt in _images["formats"]]
    if paths:
        _images["dir"].mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # plotly passes options the shared kaleido server ignores
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        for path in paths:
            fig.write_image(path, width=fig.layout.width or 1100, height=fig.layout.height or 500)
    return paths


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


def check_name(name: str | None) -> None:
    """A report name is a file name stem inside the output folder, never a path."""
    if not name:  # None or "": render picks report-<time>
        return
    if (not isinstance(name, str) or "/" in name or "\\" in name or ".." in name
            or "\0" in name or Path(name).is_absolute()):
        raise ValueError(f"report name {name!r} is not allowed: use a file name stem without "
                         "'/' or '..' (the files go into the output folder)")


def render(parameters: dict, out_dir: str | Path = ROOT / "reports", name: str | None = None,
           notebook: str | Path = NOTEBOOK) -> tuple[Path, Path]:
    """Execute the report notebook with papermill, then export it; returns (ipynb, html).
    Images asked for with parameters["image_formats"] go to <out_dir>/<name>-figures/."""
    import papermill

    check_name(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    ipynb, html = out_dir / f"{name}.ipynb", out_dir / f"{name}.html"
    if parameters.get("image_formats"):
        parameters = {**parameters, "image_dir": str((out_dir / f"{name}-figures").resolve())}
    papermill.execute_notebook(str(notebook), str(ipynb), parameters=parameters,
                               cwd=str(ROOT), progress_bar=False, kernel_name="python3")
    return ipynb, to_html(ipynb, html)

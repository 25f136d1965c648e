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


# ---- what a reader needs to run a report again -------------------------------------------
def public_path(value) -> str | None:
    """A path as a report may show it: relative paths as given, paths inside the project
    relative to it, any other absolute path by its file name only (no machine paths)."""
    if value is None:
        return None
    path = Path(str(value))
    if not path.is_absolute():
        return str(value)
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def _data_source(value) -> str:
    """A data source (a path, or a hub dataset id, which has no leading '/') as shown."""
    return public_path(value) if Path(str(value)).is_absolute() else str(value)


def configuration(params: dict) -> dict:
    """Report parameters -> `kickbench report`'s flags (underscored names, config-file values:
    lists, tables for --data/--task-limit), unset ones left out; paths as public_path shows
    them, the store by its file name. `kickbench report --config` reads this back."""
    p = params
    conf = {"model": p["model"], "methods": list(p["methods"]), "sparsities": list(p["sparsities"]),
            "patterns": list(p["patterns"]), "bits": list(p["bits"]), "group_size": p["group_size"],
            "symmetric": p["symmetric"], "partial_groups": p["partial_groups"],
            "layerwise": p["layerwise"], "tasks": list(p["tasks"]),
            "data": {k: _data_source(v) for k, v in (p["data"] or {}).items()},
            "task_limit": dict(p["task_limits"] or {}), "limit": p["limit"],
            "calib_data": p["calib_data"] and _data_source(p["calib_data"]),
            "nsamples": p["nsamples"], "seqlen": p["seqlen"],
            "ppl_data": p["ppl_data"] and _data_source(p["ppl_data"]),
            "ppl_windows": p["ppl_windows"], "ppl_window": p["ppl_window"],
            "metric": p.get("metric"), "store": p.get("store_path") and Path(str(p["store_path"])).name,
            "device": p["device"], "dtype": p["dtype"], "batch_size": p["batch_size"],
            "seed": p["seed"], "temperature": p["temperature"], "judge": p["judge"],
            "protocol": None if p.get("protocol") in (None, "kickbench") else p["protocol"]}
    if p["judge"]:
        conf.update(judge_model=p["judge_model"], judge_key_env=p["judge_key_env"],
                    judge_scoring=p["judge_scoring"])
    if p.get("executor") not in (None, "local"):
        conf.update(executor=p["executor"], address=p.get("address"),
                    gpus_per_unit=p.get("gpus_per_unit"), cpus_per_unit=p.get("cpus_per_unit"))
    for fmt in p.get("image_formats") or ():
        conf[fmt] = True
    conf = {k: v for k, v in conf.items() if v is not None and v != {} and v is not False}
    return {**conf, **(p.get("options") or {})}  # an option's False is --no-<option>


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string is a JSON string
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def _toml_key(k: str) -> str:
    import json

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def config_toml(conf: dict) -> str:
    """A configuration as a TOML file for `kickbench report --config FILE`."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in conf.items())


def command_line(conf: dict, name: str | None = None) -> str:
    """The `kickbench report` command of a configuration (every value spelled out)."""
    import shlex

    words = ["kickbench", "report"]
    for k, v in conf.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            words.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, dict):
            for task, x in v.items():
                words += [flag, shlex.quote(f"{task}={x}")]
        else:
            text = ",".join(map(str, v)) if isinstance(v, list) else str(v)
            words += [flag, shlex.quote(text)]
    return " ".join(words + (["--name", shlex.quote(name)] if name else []))


def reproduction_html(conf: dict) -> str:
    """The provenance section's command and configuration file, as escaped HTML."""
    esc = _html.escape
    return (f"<p><b>Command</b> (against the same results store, every number is read back; a "
            f"path outside the project is shown by its file name):</p><pre>{esc(command_line(conf))}</pre>"
            f"<p><b>Configuration</b>: the same as a file, for <code>kickbench report --config "
            f"FILE.toml</code>:</p><pre>{esc(config_toml(conf))}</pre>")


def kernel_manager(verbose: bool = False):
    """The kernel manager papermill starts the notebook's kernel with: CurveZMQ-encrypted
    transport where pyzmq and the kernelspec support it (so the kernel has nothing to warn
    about), and the kernel process's own stdout/stderr kept out of the terminal unless
    verbose (cell outputs are in the notebook; progress comes through progress.py)."""
    import subprocess

    import zmq
    from jupyter_client import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            if zmq.has("curve"):
                self.transport_encryption = "auto"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if not verbose:
                kw.update(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return KernelManager


def render(parameters: dict, out_dir: str | Path = ROOT / "reports", name: str | None = None,
           notebook: str | Path = NOTEBOOK, progress: bool = True,
           verbose: bool = False) -> tuple[Path, Path]:
    """Execute the report notebook with papermill, then export it; returns (ipynb, html).
    Images asked for with parameters["image_formats"] go to <out_dir>/<name>-figures/.
    progress: stages, items and time left on stderr (the notebook writes them to the file
    named by its `progress_file` parameter; kickbench/progress.py); verbose: the kernel's own
    output and every cell's output too."""
    import tempfile

    import papermill

    from . import progress as prog

    check_name(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    ipynb, html = out_dir / f"{name}.ipynb", out_dir / f"{name}.html"
    if parameters.get("image_formats"):
        parameters = {**parameters, "image_dir": str((out_dir / f"{name}-figures").resolve())}
    if verbose:
        _log_to_stderr("papermill")
    display = prog.Display(verbose=verbose) if progress else _Silent()
    with tempfile.TemporaryDirectory(prefix="kickbench-progress-") as tmp:
        events = Path(tmp) / "progress.jsonl"
        try:
            with prog.follow(events, display):
                papermill.execute_notebook(
                    str(notebook), str(ipynb), parameters={**parameters, "progress_file": str(events)},
                    cwd=str(ROOT), progress_bar=False, log_output=verbose, kernel_name="python3",
                    kernel_manager_class=kernel_manager(verbose))
            display.event({"stage": "rendering", "label": html.name})
            return ipynb, to_html(ipynb, html)
        finally:
            display.close()


class _Silent:
    def event(self, e): ...
    def tick(self): ...
    def close(self): ...


def _log_to_stderr(name: str) -> None:
    import logging
    import sys

    log = logging.getLogger(name)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)

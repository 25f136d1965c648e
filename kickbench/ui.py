"""The workbench: ipywidgets that pick a model, a compressor and a level, run it inline (in a
thread, so the notebook stays responsive and Cancel works) and draw live Plotly curves.

The callbacks are thin: every action is a method (run, cancel, wait, redraw) over ordinary
package functions, so tests drive the widgets in plain Python."""

from __future__ import annotations

import html
import threading

import ipywidgets as w
import pandas as pd
import plotly.graph_objects as go

from . import config, models, plots, sweep, validate
from .compress import registry
from .compress.calibration import CalibrationSpec
from .compress.spec import CompressionSpec
from .results import changed_answers
from .session import Session
from .store import Store
from .tasks import TASKS, TaskSpec, right_or_wrong

PATTERNS = ("unstructured", "2:4", "4:8")
BITS = (2, 3, 4, 8)
GROUPS = (("per channel", None), ("32", 32), ("64", 64), ("128", 128))
TASK_CHOICES = ("factoid", "mmlu:0-shot", "icraqa", "icraqa:closed", "icsum", "instruct",
                "perplexity")


class Workbench:
    """model: built-in name, HF id, folder or .gguf; tasks: names from TASK_CHOICES; limit:
    items per task (perplexity: ppl_windows windows of ppl_window tokens); calibration: the
    windows for wanda/sparsegpt/gptq; background=False runs clicks in the caller's thread.
    models: None (any model the box is given) or, as an app serves it, the models a visitor may
    pick besides the built-ins; the box then offers only those and run() refuses the rest.
    address: a Ray cluster address ("auto", "host:6379", "ray://host:10001") for the cluster
    box: with one, each run's (model, compression) units run there as Ray tasks (results are
    still stored here, batch by batch, and stream into the chart); empty: this process."""

    def __init__(self, model: str = "smollm2-135m", tasks=("factoid", "perplexity"), limit: int = 16,
                 store: Store | str | None = None, data: dict | None = None,
                 calibration: CalibrationSpec = CalibrationSpec(None, nsamples=8, seqlen=128),
                 ppl_windows: int = 2, ppl_window: int = 512, batch_size: int = 16,
                 device: str | None = None, dtype: str | None = None, background: bool = True,
                 models: list[str] | None = None, address: str | None = None):
        self.store = store if isinstance(store, Store) else validate.open_store(store)
        self.data, self.calibration = dict(data or {}), calibration
        self.ppl_windows, self.ppl_window, self.batch_size = ppl_windows, ppl_window, batch_size
        self.device, self.dtype, self.background = device, dtype, background
        # this workbench's models (compressed in place during a run, so never shared with another
        # workbench); picking another model frees the previous one
        self.session = Session(max_models=1)
        self.results = pd.DataFrame()  # every point run in this session (the chart's data)
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._build(model, tasks, limit, models, address)

    # ---- widgets -------------------------------------------------------------------------
    def _build(self, model, tasks, limit, allowed=None, address=None) -> None:
        wide = w.Layout(width="420px")
        self.allowed = None  # any model; else the only names run() accepts
        options, placeholder = models.REAL_BUILTINS, "built-in, HF id, folder or .gguf"
        if allowed is not None:
            allowed = [m.strip() for m in allowed]
            self.allowed = tuple(dict.fromkeys([*models.BUILTINS, *allowed]))
            if model not in self.allowed:
                raise ValueError(f"starting model {model!r} is not one this app offers "
                                 f"({', '.join(self.allowed)})")
            options = tuple(dict.fromkeys([*models.REAL_BUILTINS, *allowed, model]))
            placeholder = "pick one of the offered models"
        self.model = w.Combobox(value=model, options=options, ensure_option=allowed is not None,
                                description="model", placeholder=placeholder,
                                layout=w.Layout(width="760px"))  # a typed hub id or path reads back whole
        self.family = w.ToggleButtons(options=list(registry.FAMILIES), value="pruning",
                                      description="family")
        self.method = w.Dropdown(options=registry.names("pruning"), value="wanda", description="method")
        self.pattern = w.Dropdown(options=PATTERNS, value="unstructured", description="pattern")
        self.layerwise = w.Dropdown(options=["uniform", *registry.ALLOCATORS], value="uniform",
                                    description="layerwise")
        self.sparsity = w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="sparsity",
                                      readout_format=".0%", continuous_update=False)
        self.bits = w.Dropdown(options=BITS, value=4, description="bits")
        self.group_size = w.Dropdown(options=GROUPS, value=None, description="group")
        self.fixed = w.HTML("bitsandbytes: the level is fixed by the method")
        bad = [t for t in tasks if t not in TASK_CHOICES]
        if bad:
            raise ValueError(f"unknown workbench task(s) {bad}; available: {', '.join(TASK_CHOICES)}")
        self.tasks = w.SelectMultiple(options=TASK_CHOICES, value=tuple(tasks), description="tasks",
                                      rows=len(TASK_CHOICES))
        self.limit = w.BoundedIntText(value=limit, min=1, max=100_000, description="items")
        self.address = w.Text(value=address or "", description="cluster",
                              placeholder="Ray address; empty: this process")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="", layout=wide)
        self.status = w.HTML("Pick a model, a compressor and a level, then Run.")
        self.figure = go.FigureWidget(layout=dict(template="plotly_white", height=360,
                                                  title="run a point to draw its curve"))
        self.table = w.HTML()
        self.changed = w.HTML()
        self.family.observe(self._on_family, "value")
        self.method.observe(self._on_method, "value")
        self.pattern.observe(self._on_method, "value")
        self.run_button.on_click(lambda _: self.run())
        self.cancel_button.on_click(lambda _: self.cancel())
        self._on_method()
        self.widget = w.VBox([
            self.model,  # a row of its own, as wide as both columns below
            w.HBox([w.VBox([self.family, self.method, self.pattern, self.sparsity,
                            self.layerwise, self.bits, self.group_size, self.fixed], layout=w.Layout(width="440px")),
                    w.VBox([self.tasks, self.limit, self.address,
                            w.HBox([self.run_button, self.cancel_button]),
                            self.progress, self.status])]),
            self.figure, w.HTML("<b>Results</b> (mean [95% bootstrap CI])"), self.table,
            w.HTML("<b>What changed</b>: questions the dense model answered right and the last "
                   "compressed model got wrong"), self.changed])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _on_family(self, _=None) -> None:
        self.method.options = registry.names(self.family.value)
        self._on_method()

    def _on_method(self, _=None) -> None:
        """Show the level control that fits the method."""
        level = registry.method(self.method.value).level
        show = {self.pattern: level == "sparsity", self.sparsity: level == "sparsity",
                self.layerwise: level == "sparsity", self.bits: level == "bits",
                self.group_size: level == "bits", self.fixed: level == "fixed"}
        for control, visible in show.items():
            control.layout.display = None if visible else "none"
        self.sparsity.disabled = self.layerwise.disabled = self.pattern.value != "unstructured"

    # ---- what the controls say -----------------------------------------------------------
    def spec(self) -> CompressionSpec:
        m, cal = self.method.value, self.calibration
        level = registry.method(m).level
        if level == "sparsity":
            if self.pattern.value != "unstructured":
                return config.spec(m, pattern=self.pattern.value, calibration=cal)
            layerwise = None if self.layerwise.value == "uniform" else self.layerwise.value
            return config.spec(m, sparsity=round(self.sparsity.value, 4), layerwise=layerwise,
                               calibration=cal)
        if level == "bits":
            return config.spec(m, bits=self.bits.value, group_size=self.group_size.value,
                               calibration=cal)
        return config.spec(m)

    def task_specs(self) -> list[TaskSpec]:
        if not self.tasks.value:
            raise ValueError("pick at least one task")
        out = []
        for t in self.tasks.value:
            name = t.partition(":")[0]
            if name == "perplexity":
                out.append(TaskSpec("perplexity", data=self.data.get(name), limit=self.ppl_windows,
                                    window=self.ppl_window))
            else:
                out.append(TaskSpec.parse(t, data=self.data.get(name), limit=self.limit.value))
        return out

    # ---- actions -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Validate (fast, here), then evaluate dense and the chosen point (in a thread)."""
        if self.running:
            return
        self.error = None
        try:
            model = self.model.value.strip()
            if self.allowed is not None and model not in self.allowed:
                raise ValueError(f"this app offers only these models: {', '.join(self.allowed)}; "
                                 f"{model!r} is not one of them")
            spec, tasks, where = self.spec(), self.task_specs(), self.executor()
            plan = sweep.plan([model], [CompressionSpec("dense"), spec], tasks)
            validate.runs(plan, sweep.Settings(device=self.device, dtype=self.dtype,
                                               batch_size=self.batch_size))
        except (ValueError, FileNotFoundError) as e:
            return self._fail(e)
        self._cancel.clear()
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self._say(f"running {html.escape(spec.label)} on {html.escape(model)} ...")
        if self.background:
            self._thread = threading.Thread(target=self._work, args=(plan, where), daemon=True)
            self._thread.start()
        else:
            self._work(plan, where)

    def cancel(self) -> None:
        """Stop after the batch in flight; every finished batch is already stored."""
        if self.run_button.disabled:  # a run is in flight
            self._cancel.set()
            self._say("cancelling after the current batch ...")

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def executor(self):
        """Where runs go: None (this process) or a RayExecutor on the cluster box's address."""
        from .executors import executor

        address = self.address.value.strip()
        return executor("ray", address) if address else None

    def _work(self, plan: list[sweep.Run], where=None) -> None:
        settings = sweep.Settings(device=self.device, dtype=self.dtype, batch_size=self.batch_size,
                                  progress=False, on_progress=self._on_progress, executor=where)
        try:
            for is_dense in (True, False):  # dense first: its line is drawn while the rest runs
                part = [r for r in plan if r.spec.is_dense == is_dense]
                if part:
                    self._add(sweep.execute(part, self.store, settings, self.session))
            self._say(f"done: {html.escape(plan[-1].spec.label)}, {len(plan)} runs "
                      f"(results store: {html.escape(self.store.path.name)})")
        except sweep.Cancelled:
            self._say("cancelled; finished batches are stored and resume on the next Run")
        except Exception as e:  # noqa: BLE001 - any failure must reach the panel, not the log
            self._fail(e)
        finally:
            self.run_button.disabled, self.cancel_button.disabled = False, True

    def _on_progress(self, desc: str, done: int, total: int) -> None:
        self.progress.max, self.progress.value = max(total, 1), done
        self.progress.description = desc.split(" |")[0]
        if self._cancel.is_set():
            raise sweep.Cancelled

    def _add(self, frame: pd.DataFrame) -> None:
        both = pd.concat([self.results, frame], ignore_index=True)
        # the latest result per point and metric (a new item limit replaces the old one)
        self.results = both.drop_duplicates(["model", "label", "task_label", "metric"], keep="last")
        self.redraw()

    # ---- views ---------------------------------------------------------------------------
    def redraw(self) -> None:
        """Chart, results table and what-changed view from the session's results."""
        r = self.results
        if r.empty:
            return
        panels = [(t.label, t.headline) for t in self.task_specs()]
        comp = r[r.family != "dense"]
        x = "sparsity" if comp.empty or set(comp.family) == {"pruning"} else "size_fraction"
        try:
            fig = plots.small_multiples(r, panels, x=x, cols=min(len(panels), 2))
        except ValueError:  # the chosen tasks have no results yet
            return
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.add_traces(list(fig.data))
            self.figure.layout = fig.layout
        self.table.value = results_table(r[r.metric.isin([m for _, m in panels])],
                                         self.store).to_html(index=False)
        self.changed.value = self._changed().to_html(index=False) or ""

    def _changed(self) -> pd.DataFrame:
        r, out = self.results, []
        comp = r[r.family != "dense"]
        if comp.empty:
            return pd.DataFrame()
        last = comp.iloc[-1]
        for task in dict.fromkeys(r.task):  # tasks scored right or wrong
            if (metric := right_or_wrong(TASKS[task])) is None:
                continue
            rows = r[(r.model == last.model) & (r.task == task) & (r.metric == metric)]
            dense, point = rows[rows.family == "dense"], rows[rows.label == last.label]
            if len(dense) and len(point):
                n = int(min(dense.n.iloc[-1], point.n.iloc[-1]))
                lost = changed_answers(self.store, dense.key.iloc[-1], point.key.iloc[-1], n, metric)
                out.append(lost.assign(task=rows.task_label.iloc[-1]))
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame()

    def _say(self, text: str) -> None:
        self.status.value = text

    def _fail(self, e: BaseException) -> None:
        self.error = e
        self._say(f'<span style="color:#b00020"><b>error:</b> {html.escape(str(e))}</span>')


def _flips_and_kl(r) -> str:
    """' · flips a/b' (right -> wrong / wrong -> right) and ' · KL k' of one paired row."""
    rw, wr, kl = (getattr(r, c, float("nan")) for c in ("right_to_wrong", "wrong_to_right", "kl"))
    flips = f" · flips {rw:.0f}/{wr:.0f}" if rw == rw and rw is not None and wr is not None else ""
    return flips + (f" · KL {kl:.3g}" if kl == kl and kl is not None else "")


def results_table(frame: pd.DataFrame, store: Store | None = None) -> pd.DataFrame:
    """One row per compression, one column per task metric: 'mean [low, high]'; with the store,
    each compressed point adds its paired difference from dense on the same items, its 95%
    interval and Holm-adjusted p across the table's points (results.paired_frame;
    perplexity: the difference of NLL per token), right -> wrong / wrong -> right flips (0/1
    metrics) and the mean KL from dense of the next token (divergence.py) where measured."""
    cells = plots.with_text(frame).assign(
        column=[f"{t} {m} (n={n})" for t, m, n in zip(frame.task_label, frame.metric, frame.n)])
    if store is not None and len(frame):
        from .results import paired_frame, with_paired

        m = with_paired(frame, paired_frame(store, frame))
        vs_dense = [f" · Δ {d:+.3f} [{lo:+.3f}, {hi:+.3f}]{' NLL/token' if s == 'nll_per_token' else ''}"
                    f" p(Holm)={ph:.3g}{' ▼' if drop else ''}" if d == d else ""
                    for d, lo, hi, s, ph, drop in zip(m["diff"], m.diff_low, m.diff_high, m.scale,
                                                      m.p_holm, m.significant_drop)]
        extra = [_flips_and_kl(r) for r in m.itertuples()]
        cells = cells.assign(score=[a + b + c for a, b, c in zip(cells.score, vs_dense, extra)])
    table = cells.pivot_table(index=["model", "label", "size"], columns="column", values="score",
                              aggfunc="last", sort=False)
    return table.reset_index().rename_axis(columns=None)

"""Progress of a notebook run, in the terminal of the process that started it.

The notebook side (`execute`) runs a sweep and appends one JSON line per event to a file:
which run of how many, its stage (loading, calibrating, compressing, generating, scoring,
judging), items done of how many. Output the libraries print meanwhile (model conversion
messages, loading bars, warnings) goes into that file too, not into the report. The driver
side (`follow`, used by report.render) tails the file in a thread and draws one tqdm bar on
stderr (a terminal), or writes a plain line per stage and at most one every 30 s otherwise
(a log file)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

STAGES = ("loading", "calibrating", "compressing", "generating", "scoring", "judging", "charting",
          "rendering", "running")  # running: runs finished under an executor (Ray)
LOG_INTERVAL_S = 30.0  # a non-terminal stderr gets a line per stage and at most one per this


# ---- notebook side ------------------------------------------------------------------------
class Writer:
    """Appends events to the progress file (one JSON object a line)."""

    def __init__(self, path: str | Path, part: str | None = None):
        self.path, self.part = Path(path), part

    def event(self, **fields) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": time.time(), "part": self.part, **fields}) + "\n")

    def stage(self, stage: str, label: str = "", run: int | None = None, runs: int | None = None,
              done: int | None = None, total: int | None = None) -> None:
        self.event(stage=stage, label=label, run=run, runs=runs, done=done, total=total)


class _LogStream(io.TextIOBase):
    """A text stream whose writes become {"log": text} events."""

    def __init__(self, writer: Writer):
        self.writer = writer

    def write(self, text: str) -> int:
        if text:
            self.writer.event(log=text)
        return len(text)


@contextlib.contextmanager
def captured(writer: Writer):
    """Python-level stdout, stderr and logging stream handlers into the progress file."""
    stream = _LogStream(writer)
    loggers = [logging.root, *(lg for lg in logging.root.manager.loggerDict.values()
                               if isinstance(lg, logging.Logger))]
    handlers = [h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(getattr(type(h), "stream", None), property)  # follows sys.stderr
                and h.stream in (sys.stdout, sys.stderr)]
    before = [h.stream for h in handlers]
    for h in handlers:
        h.setStream(stream)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        for h, s in zip(handlers, before):
            h.setStream(s)


class _WatchedJudge:
    """A judge that reports each batch of prompts it answers as the `judging` stage."""

    def __init__(self, judge, on_batch):
        self._judge, self._on_batch = judge, on_batch

    def complete(self, batch, layout):
        replies = self._judge.complete(batch, layout)
        self._on_batch(len(batch))
        return replies

    def __getattr__(self, name):  # label, identity, ... are the judge's own
        return getattr(self._judge, name)


def execute(runs, store, settings, session=None, progress_file: str | None = None,
            part: str | None = None):
    """sweep.execute(runs, store, settings, session), reporting to progress_file when given
    (without it: exactly sweep.execute). The same frame either way: the runs are executed one
    compression at a time through one session (each model loaded once, each spec compressed
    once), and the frame is read back as one sweep.execute call would return it."""
    from . import compress, results, sweep
    from .session import Session

    if not progress_file:
        return sweep.execute(runs, store, settings, session)
    out, own = Writer(progress_file, part), session is None
    if getattr(settings, "executor", None) is not None:  # units elsewhere (Ray), side by side
        with captured(out):
            return sweep.execute(runs, store, _counted(settings, out, runs), session)
    session = session or Session()
    done = set()
    try:
        with captured(out):
            for model_name in dict.fromkeys(r.model for r in runs):
                out.stage("loading", model_name)
                lm = session.model(model_name, settings.device, settings.dtype)
                model_runs = [r for r in runs if r.model == model_name]
                for r in model_runs:
                    compress.check(r.spec, lm.model)  # every spec, before any slow work
                for spec in dict.fromkeys(r.spec for r in model_runs):
                    group = [r for r in model_runs if r.spec == spec]
                    frame = sweep.execute(group, store, _watched(settings, out, runs, group, lm,
                                                                  session), session)
                    done |= set(zip(frame.key, frame.n))
    finally:
        if own:
            session.close()
    frame = results.frame(store)
    return frame[[k in done for k in zip(frame.key, frame.n)]].reset_index(drop=True)


def _counted(settings, out: Writer, runs):
    """Settings whose on_progress counts the runs that finished (units under an executor run
    side by side, so one stage line per unit would interleave; their batches still arrive
    here, in the driver). Runs already in the store send nothing."""
    finished: set[str] = set()
    where = type(settings.executor).__name__
    out.stage("running", f"{where}: runs finished", None, None, 0, len(runs))

    def on_progress(desc: str, done: int, total: int) -> None:
        if done >= total:
            finished.add(desc)
        out.stage("running", f"{where}: runs finished", None, None, len(finished), len(runs))
        if settings.on_progress is not None:
            settings.on_progress(desc, done, total)

    return replace(settings, on_progress=on_progress)


def _watched(settings, out: Writer, runs, group, lm, session):
    """Settings whose on_progress and judge report the group's runs by number and stage."""
    from . import compress, sweep

    spec, first = group[0].spec, group[0]

    def stage(run, what=None, done=None, total=None) -> None:
        kind = run.task.module.KIND
        what = what or ("generating" if kind in ("generate", "dialogue") else "scoring")
        out.stage(what, f"{spec.label} · {run.task.label}", runs.index(run) + 1, len(runs),
                  done, total)

    if compress.calibration_spec(spec) is not None:
        stage(first, "calibrating")
    by_key = {}  # the runners name a run by task and key prefix: "factoid | 1a2b3c4d"
    for r in group:
        key, _ = sweep.run_key(lm, spec, r.task, session.items(r.task)[1], settings.seed, session)
        by_key[key[:8]] = r
    stage(first, None if spec.is_dense else "compressing")
    last = first

    def on_progress(desc: str, done: int, total: int) -> None:
        nonlocal last
        last = by_key.get(desc.rpartition(" | ")[2], last)
        stage(last, None, done, total)
        if settings.on_progress is not None:
            settings.on_progress(desc, done, total)

    judged = 0

    def on_judged(n: int) -> None:  # judging follows every run of the group; prompts counted
        nonlocal judged
        judged += n
        out.stage("judging", f"{spec.label} · judge prompts answered", runs.index(group[-1]) + 1,
                  len(runs), judged, None)

    judge = settings.judge and _WatchedJudge(settings.judge, on_judged)
    return replace(settings, on_progress=on_progress, judge=judge)


def note(progress_file: str | None, stage: str, label: str = "") -> None:
    """One stage event from a notebook cell (nothing without a progress file)."""
    if progress_file:
        Writer(progress_file).stage(stage, label)


# ---- driver side --------------------------------------------------------------------------
class Display:
    """Events -> a tqdm bar on a terminal, or plain lines at a steady rate on anything else."""

    def __init__(self, file=None, verbose: bool = False, interval: float = LOG_INTERVAL_S):
        self.file = file or sys.stderr
        self.tty = hasattr(self.file, "isatty") and self.file.isatty()
        self.verbose, self.interval = verbose, interval
        self.bar, self.current, self.n, self.total = None, None, 0, None
        self.started = self.printed = self.refreshed = 0.0
        self.last = time.time()  # a stage starts when the one before it sent its last event

    def event(self, e: dict) -> None:
        if "log" in e:
            if self.verbose:
                self._write(e["log"])
            return
        desc = " · ".join(x for x in (e.get("part"), e["label"]) if x)
        if e.get("run"):
            desc = f"run {e['run']}/{e['runs']} {desc}"
        desc = f"{desc} · {e['stage']}" if desc else e["stage"]
        n, total = e.get("done") or 0, e.get("total")
        new = desc != self.current
        self.current, self.n, self.total = desc, n, total
        now = e.get("t", time.time())  # when the notebook sent it (the file is read in bursts)
        if new:  # a stage with items began when the event before it was sent
            self.started = self.last if n else now
        self.last = now
        if self.tty:
            if self.bar is None:
                self.bar = tqdm(total=total, desc=desc, file=self.file, unit="item",
                                mininterval=0.5, dynamic_ncols=True, leave=False)
            elif new:
                if self.bar.n:  # a finished stage with items stays on screen, one line
                    self.bar.write(str(self.bar), file=self.file)
                self.bar.set_description(desc, refresh=False)
                self.bar.reset(total=total)
            self.bar.update(n - self.bar.n)
        elif new or (total and n >= total) or time.time() - self.printed >= self.interval:
            self._line(now)

    def tick(self) -> None:
        """Called while nothing new arrives: keep the elapsed time moving, steadily."""
        now = time.time()
        if self.current is None:
            return
        if self.tty and self.bar is not None and now - self.refreshed >= 1:
            self.bar.refresh()
            self.refreshed = now
        elif not self.tty and now - self.printed >= self.interval:
            self._line(now)  # the stage's elapsed time, now

    def _line(self, now: float) -> None:
        elapsed = max(now - self.started, 0.0)
        if self.n or self.total:
            text = tqdm.format_meter(self.n, self.total, elapsed, prefix=self.current, unit="item",
                                     ascii=True)
        else:  # a stage without items: its name, then how long it has been running
            text = f"{self.current} [{tqdm.format_interval(elapsed)}]" if elapsed >= 1 else self.current
        print(text, file=self.file, flush=True)
        self.printed = time.time()

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        self.file.write(text)
        self.file.flush()
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            if self.bar.n:
                self.bar.write(str(self.bar), file=self.file)
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def follow(path: str | Path, display: Display):
    """Tail the progress file in a thread while the block runs; the display gets each event."""
    path = Path(path)
    path.touch()
    stop = threading.Event()

    def tail() -> None:
        with open(path, encoding="utf-8") as f:
            pending = ""
            while True:
                line = f.readline()
                if line:
                    pending += line
                    if pending.endswith("\n"):
                        display.event(json.loads(pending))
                        pending = ""
                    continue
                if stop.is_set():
                    return
                display.tick()
                stop.wait(0.2)

    thread = threading.Thread(target=tail, name="kickbench-progress", daemon=True)
    thread.start()
    try:
        yield display
    finally:
        stop.set()
        thread.join()

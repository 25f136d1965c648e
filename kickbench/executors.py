"""Where a sweep's units run: this process (LocalExecutor) or a Ray cluster (RayExecutor).

A unit is one (model, compression) with all its tasks (sweep.units), so a compressed model is
built once per unit. Under Ray each unit is a task with a resource request (`gpus_per_unit`,
`cpus_per_unit`, `max_calls=1`: a worker process never outlives its unit). The driver is the
only writer of the SQLite store:

1. before dispatch it reads what the store already holds for the unit (runs with the unit's
   model name, spec key and task; their samples and scores) and hands that to the worker;
2. the worker runs the ordinary code (sweep.run_unit) against a RecordingStore: an in-memory
   Store seeded with those rows, so the runners see what exists and compute only what is
   missing, that also turns every write (put_run / add_samples / put_scores / merge_metrics /
   put_judgments) and every on_progress call into a record;
3. the records stream back (a Ray generator, num_returns="streaming") and the driver applies
   each to the real Store as it arrives, in order: a batch is stored when it reaches the driver.

Faults: a unit whose worker dies (SIGKILL, node lost) is dispatched again, at most
`max_retries` times, with a fresh snapshot of the store, so the new attempt redoes only the
batches that had not reached the driver (Ray's own task retry is off: it would rerun the unit
from its original arguments and regenerate stored batches). A unit that raises is reported with
its error (UnitsFailed, after every other unit finished). Ctrl-C or Cancelled on the driver
cancels the outstanding units; every stored batch stays. An interrupted cluster run resumes
like a local one: run the same sweep again.

Files: built-in models come from the package installed on the worker; local model folders,
GGUF files and data files are read by path (the driver's working directory is the worker's
too) and verified on the worker by content hash (SourceMismatch when a node sees another file
or none). LLM judging (a post-hoc stage without a model) runs on the driver after the units.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from . import models
from .store import Store

WRITES = ("put_run", "add_samples", "put_scores", "merge_metrics", "put_judgments")


class SourceMismatch(RuntimeError):
    """A worker node sees another file (or none) at a path the driver hashed."""


class UnitsFailed(RuntimeError):
    """Some units failed (each with its error); every other unit completed and is stored."""

    def __init__(self, failures: list[dict]):
        self.failures = failures
        lines = [f"{f['model']} | {f['spec']}: {f['error']}" for f in failures]
        super().__init__(f"{len(failures)} unit(s) failed, the rest completed:\n  "
                         + "\n  ".join(lines))


@dataclass(frozen=True)
class LocalExecutor:
    """The units in this process, one after the other (what execute does without one)."""

    def run(self, runs, store, settings, session=None) -> list[tuple[str, int]]:
        from . import sweep

        settings = replace(settings, executor=None)
        return _done_of(sweep.execute(runs, store, settings, session))


def _done_of(frame) -> list[tuple[str, int]]:
    return list(dict.fromkeys(zip(frame.key, frame.n))) if len(frame) else []


# --- files a worker reads by path ------------------------------------------------------------

def content_hash(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's (relative path, file hash) list."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path).as_posix()}\0{content_hash(p)}\n".encode())
    return h.hexdigest()


def unit_sources(model_name: str, spec, tasks) -> dict[str, str]:
    """path -> content hash of every local file or folder the unit reads by path (model folder
    or GGUF, task data, calibration text); built-ins and hub ids are not paths."""
    paths = []
    kind, ref = models.resolve_source(model_name)
    if kind in ("folder", "gguf"):
        paths.append(ref)
    cal = getattr(spec, "calibration", None)
    for p in [t.data for t in tasks] + [getattr(cal, "source", None)]:
        if p and Path(p).expanduser().exists():
            paths.append(str(Path(p).expanduser()))
    return {p: content_hash(p) for p in dict.fromkeys(paths)}


def verify_sources(sources: dict[str, str]) -> None:
    host = socket.gethostname()
    for path, digest in sources.items():
        if not Path(path).exists():
            raise SourceMismatch(
                f"{path} does not exist on worker node {host} (cwd {os.getcwd()}): local model "
                "folders and data files must be at the same path on every node (a shared "
                "filesystem, or copied there beforehand)")
        got = content_hash(path)
        if got != digest:
            raise SourceMismatch(
                f"{path} on worker node {host} is not the driver's file (content sha256 "
                f"{got[:12]} on the worker, {digest[:12]} on the driver): copy the same file there")


# --- the store a worker writes to ------------------------------------------------------------

def snapshot(store: Store, model_name: str, spec, tasks) -> dict:
    """What the store holds for a unit: the runs with its model name, spec key and a task of
    it (every key scheme and fingerprint: the worker computes its own key), with their samples,
    scores and provenance rows (raw rows)."""
    spec_json = json.dumps(json.loads(json.dumps(spec.key())), sort_keys=True)
    names = sorted({t.name for t in tasks})
    rows = store.db.execute(
        f"SELECT key, model, spec, task, meta, created FROM runs WHERE model=? AND task IN "
        f"({','.join('?' * len(names))})", (model_name, *names)).fetchall()
    runs = [r for r in rows if json.dumps(json.loads(r[2]), sort_keys=True) == spec_json]
    keys = [r[0] for r in runs]
    # judged runs (key of their own) are the driver's business; their judged_run is not needed
    out = {"runs": runs, "samples": [], "scores": []}
    for k in keys:
        out["samples"] += store.db.execute("SELECT * FROM samples WHERE key=?", (k,)).fetchall()
        out["scores"] += store.db.execute("SELECT * FROM scores WHERE key=?", (k,)).fetchall()
    return out


class RecordingStore(Store):
    """An in-memory Store seeded with a snapshot; every write is applied here and also handed
    to `emit` as a record (method name, args), in order."""

    def __init__(self, seed: dict, emit):
        super().__init__(":memory:")
        self._emit = emit
        with self.db:
            self.db.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?)", seed["runs"])
            self.db.executemany(
                "INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?)", seed["samples"])
            self.db.executemany("INSERT INTO scores VALUES (?,?,?,?,?,?,?)", seed["scores"])

    def put_run(self, key, model, spec, task, meta):
        pid = super().put_run(key, model, spec, task, meta)
        self._emit(("put_run", (key, model, spec, task, meta)))
        return pid

    def add_samples(self, key, records, provenance_id=None):
        super().add_samples(key, records, provenance_id)
        self._emit(("add_samples", (key, records)))  # the driver's provenance row, not ours

    def put_scores(self, key, n, scores):
        super().put_scores(key, n, scores)
        self._emit(("put_scores", (key, n, scores)))

    def merge_metrics(self, key, updates):
        super().merge_metrics(key, updates)
        self._emit(("merge_metrics", (key, updates)))

    def put_judgments(self, judge_label, replies):
        super().put_judgments(judge_label, replies)
        self._emit(("put_judgments", (judge_label, replies)))


def unit_records(model_name, spec, tasks, settings, seed, sources, cwd=None, hook=None):
    """The worker's side of a unit, as a generator of records: ("put_run" | "add_samples" |
    ... , args), ("progress", (desc, done, total)), and last ("done", [(key, n), ...]).
    hook(record) runs on the worker before the unit, with ("start", (model, spec label)), and
    after each yield (tests: fault injection)."""
    from . import sweep
    from .session import Session

    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)  # relative paths mean what they mean on the driver
    if hook is not None:
        hook(("start", (model_name, spec.label)))
    verify_sources(sources)
    q: queue.Queue = queue.Queue()
    stop = threading.Event()

    def on_progress(desc, done, total):
        if stop.is_set():
            raise sweep.Cancelled("driver went away")
        q.put(("progress", (desc, done, total)))

    def work():
        try:
            store = RecordingStore(seed, q.put)
            s = replace(settings, on_progress=on_progress, executor=None, judge=None)
            with Session() as session:
                done = sweep.run_unit(model_name, spec, tasks, store, s, session)
            q.put(("done", done))
        except BaseException as e:  # noqa: BLE001 - handed to the driver as the unit's error
            q.put(("error", e))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            record = q.get()
            if record[0] == "error":
                raise record[1]
            yield record
            if hook is not None:
                hook(record)
            if record[0] == "done":
                return
    finally:
        stop.set()


def apply(store: Store, record) -> None:
    name, args = record
    if name not in WRITES:
        raise ValueError(f"unknown record {name!r}")
    getattr(store, name)(*args)


# --- Ray -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RayExecutor:
    """Units as Ray tasks. address: a running cluster ("auto", "ray://host:10001", host:port);
    None starts a local Ray instance for this sweep (num_cpus: its size). Frozen and picklable:
    it describes the cluster; the connection is made in run().
    hook: a function run on the worker after each streamed record (fault injection in tests)."""

    address: str | None = None
    gpus_per_unit: float = 0
    cpus_per_unit: float = 1
    max_retries: int = 2
    num_cpus: int | None = None
    hook: object | None = field(default=None, compare=False)

    def run(self, runs, store, settings, session=None) -> list[tuple[str, int]]:
        import ray

        from . import sweep

        started = not ray.is_initialized()
        if started:
            if self.address is None:
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                         log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        try:
            return self._run(ray, sweep, runs, store, settings)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, sweep, runs, store, settings):
        remote = ray.remote(num_returns="streaming", num_cpus=self.cpus_per_unit,
                            num_gpus=self.gpus_per_unit, max_calls=1, max_retries=0)(unit_records)
        worker_settings = replace(settings, on_progress=None, judge=None, executor=None,
                                  progress=False)
        cwd = os.getcwd()
        pending = list(enumerate(sweep.units(runs)))
        attempts = {i: 0 for i, _ in pending}
        done: dict[int, list] = {}
        failures: list[dict] = []
        live: dict = {}  # generator -> (unit index, tqdm bar)

        def submit(i, unit):
            model_name, spec, tasks = unit
            attempts[i] += 1
            try:
                sources = unit_sources(model_name, spec, tasks)
            except (OSError, ValueError) as e:
                failures.append({"model": model_name, "spec": spec.label, "error": repr(e)})
                return
            seed = snapshot(store, model_name, spec, tasks)
            gen = remote.remote(model_name, spec, tasks, worker_settings, seed, sources, cwd,
                                self.hook)
            bar = tqdm(desc=f"{model_name} | {spec.label}", unit="sample",
                       disable=not settings.progress, leave=False)
            live[gen] = (i, bar)

        for i, unit in pending:
            submit(i, unit)
        units = dict(pending)
        try:
            while live:
                ready, _ = ray.wait(list(live), num_returns=1, timeout=1.0)
                for gen in ready:
                    i, bar = live[gen]
                    try:
                        ref = next(gen)
                        name, args = ray.get(ref)
                    except StopIteration:
                        live.pop(gen)
                        bar.close()
                        continue
                    except Exception as e:  # noqa: BLE001
                        live.pop(gen)
                        bar.close()
                        if _system_failure(ray, e) and attempts[i] <= self.max_retries:
                            submit(i, units[i])  # fresh snapshot: only what did not arrive
                        else:
                            failures.append({"model": units[i][0], "spec": units[i][1].label,
                                             "error": _message(e), "attempts": attempts[i]})
                        continue
                    if name == "progress":
                        desc, n_done, total = args
                        bar.set_description(f"{units[i][0]} | {units[i][1].label} | {desc}",
                                            refresh=False)
                        if settings.on_progress is not None:
                            settings.on_progress(desc, n_done, total)
                    elif name == "done":
                        done[i] = [tuple(d) for d in args]
                    else:
                        apply(store, (name, args))
                        if name == "add_samples":
                            bar.update(len(args[1]))
        except BaseException:  # Ctrl-C, Cancelled from on_progress: stop the rest, keep stored
            for gen, (_, bar) in live.items():
                bar.close()
                try:
                    ray.cancel(gen, force=True)
                except Exception:  # noqa: BLE001 - already finished
                    pass
            raise
        out = []
        for i in sorted(done):
            out += done[i]
            out += self._judge(units[i][2], done[i], store, settings)
        if failures:
            raise UnitsFailed(failures)
        return out

    @staticmethod
    def _judge(tasks, done, store, settings) -> list[tuple[str, int]]:
        """LLM judging on the driver (it needs no model here and its replies are cached in
        the store), for the unit's tasks that have a rubric."""
        if settings.judge is None:
            return []
        from . import posthoc

        return [(posthoc.judge_run(store, key, n, t.module, settings.judge, settings.progress), n)
                for t, (key, n) in zip(tasks, done) if hasattr(t.module, "RUBRIC")]


def _system_failure(ray, e: BaseException) -> bool:
    """A worker or node died (retry the unit), as opposed to an error the unit raised."""
    kinds = tuple(k for k in (getattr(ray.exceptions, n, None) for n in (
        "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
        "RaySystemError", "LocalRayletDiedError", "OutOfMemoryError")) if k is not None)
    return isinstance(e, kinds)


def _message(e: BaseException) -> str:
    """The unit's own error (not Ray's wrapper and remote traceback) where there is one."""
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(e).__name__}: {e}".splitlines()[0]


def executor(executor: str | None = "local", address: str | None = None,
             gpus_per_unit: float | None = 0, cpus_per_unit: float | None = 1):
    """The CLI's and the notebooks' choice -> an executor (None: this process); None for any
    argument means its default (local, 0 GPUs, 1 CPU per unit)."""
    name = executor or "local"
    gpus_per_unit = 0 if gpus_per_unit is None else gpus_per_unit
    cpus_per_unit = 1 if cpus_per_unit is None else cpus_per_unit
    if name == "local":
        if address is not None:
            raise ValueError("--address applies to --executor ray")
        return None
    if name == "ray":
        if gpus_per_unit < 0:
            raise ValueError(f"--gpus-per-unit must be >= 0, got {gpus_per_unit}")
        if cpus_per_unit <= 0:
            raise ValueError(f"--cpus-per-unit must be > 0, got {cpus_per_unit}")
        return RayExecutor(address=address, gpus_per_unit=gpus_per_unit,
                           cpus_per_unit=cpus_per_unit)
    raise ValueError(f"unknown executor {name!r}: local or ray")


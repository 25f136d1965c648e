"""A grid of models x compressions x tasks: plan it, then execute it with reuse (dense baseline
once, calibration once per model), storing every number. The per-kind loops live in
runners.py; models, items and calibrations belong to a Session (session.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import compress, divergence, models, posthoc, results, stats, versions
from .compress.spec import CompressionSpec
from .runners import RUNNERS, generation_config
from .session import Session
from .store import Store, result_key
from .tasks import TaskSpec


@dataclass(frozen=True)
class Run:
    model: str
    spec: CompressionSpec
    task: TaskSpec


@dataclass(frozen=True)
class Settings:
    """How to run a plan; only seed, device and dtype can change a number (they are keyed).
    judge (kickbench.judge.Judge or None): judges the tasks that have a RUBRIC; its scores
    are stored under a key of their own that includes the judge's identity.
    on_progress(description, done, total): called after every stored batch of samples; an
    exception raised there (e.g. Cancelled) stops the run with every finished batch kept.
    executor: where the (model, compression) units run: None (this process) or an executor
    object such as kickbench.executors.RayExecutor (a frozen, picklable description of a
    cluster, not a connection); `execute(..., executor=...)` overrides it.
    divergence: each compressed point's KL from the dense model on generation and choice
    tasks (divergence.py; an extra forward pass over the prompts per model); False skips it."""

    limit: int | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 64
    seed: int = 0
    progress: bool = True
    judge: object | None = None
    on_progress: Callable[[str, int, int], None] | None = None
    executor: object | None = None
    divergence: bool = True


class Cancelled(Exception):
    """Raised from Settings.on_progress to stop a run between two stored batches."""


def plan(model_names, specs, tasks) -> list[Run]:
    """Validate everything cheaply, then list the runs: dense first, duplicates dropped."""
    for name in model_names:
        models.resolve_source(name)
    specs = [s.canonical() for s in specs]
    for spec in specs:
        compress.check(spec)
    tasks = [t if isinstance(t, TaskSpec) else TaskSpec(t) for t in tasks]
    specs = sorted(dict.fromkeys(specs), key=lambda s: not s.is_dense)
    return [Run(m, s, t) for m in dict.fromkeys(model_names) for s in specs for t in tasks]


def run_key(lm: models.LoadedModel, spec: CompressionSpec, task: TaskSpec, data_hash: str,
            seed: int, session: Session) -> tuple[str, dict]:
    """The key of a result and what it hashes: everything that can change a number. `versions`
    holds the versions of exactly the components this run computes with (versions.used: task,
    engine, stats, its compressor and allocator, fluency), so a change to one compressor's code
    leaves every other method's results valid; `model` covers weights, tokenizer, chat
    template and config (models.LoadedModel.fingerprints); `aggregates` how each metric is
    aggregated."""
    module = task.module
    cal = session.calibration(lm, spec)
    fields = {
        "scheme": versions.KEY_SCHEME,
        "model": lm.fingerprint, "device": lm.device.type, "spec": spec.key(),
        "calibration": cal.hash if cal else None,
        "task": module.NAME, "data": data_hash,
        "template": module.TEMPLATES[task.template_name], "decoding": _decoding(lm, task),
        "versions": versions.used(spec, module),
        "aggregates": {m.name: m.aggregate for m in module.METRICS},
        "seed": seed, "torch": torch.__version__, "transformers": _transformers_version(),
    }
    return result_key(fields), fields


def _decoding(lm: models.LoadedModel, task: TaskSpec) -> dict:
    module = task.module
    if module.KIND in ("generate", "dialogue"):
        rule = getattr(module, "BUDGET_RULES", {}).get(task.template_name)
        # a per-prompt length budget (runners.budgets) is part of how answers are made
        return {**generation_config(task).key(), **({"budget": rule} if rule else {})}
    if module.KIND == "choice":
        return {"loglikelihood": True, "max_context": module.MAX_CONTEXT}
    return {"window": window_of(lm, task), "stride": task.stride}


def window_of(lm: models.LoadedModel, task: TaskSpec) -> int:
    return task.window or task.module.default_window(lm.model.config)


def requests(lm: models.LoadedModel, task: TaskSpec, session: Session) -> list[dict]:
    """What is evaluated item by item: the items, one sample per turn for dialogues, or token
    windows for rolling tasks."""
    items = session.items(task)[0]
    if task.module.KIND == "dialogue":
        return task.module.expand(items)
    if task.module.KIND == "rolling":
        return session.windows(lm, task, window_of(lm, task))
    return items


def execute(runs: list[Run], store: Store, settings: Settings = Settings(),
            session: Session | None = None, executor=None) -> pd.DataFrame:
    """Run every planned point not already in the store; return their results (tidy frame).
    Without a session, one lives for this call only (its models are freed at the end).
    executor (else settings.executor): runs the (model, compression) units elsewhere, e.g.
    kickbench.executors.RayExecutor; the store is written here only, batch by batch."""
    executor = executor if executor is not None else settings.executor
    if executor is not None:
        return _frame(store, executor.run(runs, store, settings, session))
    own = session is None
    session = session or Session()
    done: list[tuple[str, int]] = []
    try:
        for model_name in dict.fromkeys(r.model for r in runs):
            lm = session.model(model_name, settings.device, settings.dtype)
            model_runs = [r for r in runs if r.model == model_name]
            for r in model_runs:
                compress.check(r.spec, lm.model)  # e.g. N:M widths, before any slow work
            for spec in dict.fromkeys(r.spec for r in model_runs):
                tasks = [r.task for r in model_runs if r.spec == spec]
                done += _run_spec(lm, spec, tasks, store, settings, session)
    finally:
        if own:
            session.close()
    return _frame(store, done)


def units(runs: list[Run]) -> list[tuple[str, CompressionSpec, list[TaskSpec]]]:
    """The plan as units of work: one (model, compression) with all its tasks, in plan order
    (a compressed model is built once per unit)."""
    out: dict[tuple, list[TaskSpec]] = {}
    for r in runs:
        out.setdefault((r.model, r.spec), []).append(r.task)
    return [(m, s, t) for (m, s), t in out.items()]


def run_unit(model_name: str, spec: CompressionSpec, tasks: list[TaskSpec], store: Store,
             settings: Settings, session: Session) -> list[tuple[str, int]]:
    """One unit as a remote worker runs it: load, check, compress once, evaluate what is
    missing, post-hoc stages; returns its (key, n) pairs."""
    lm = session.model(model_name, settings.device, settings.dtype)
    compress.check(spec, lm.model)
    return _run_spec(lm, spec, tasks, store, settings, session)


def _frame(store: Store, done: list[tuple[str, int]]) -> pd.DataFrame:
    frame = results.frame(store)
    wanted = pd.MultiIndex.from_tuples(done, names=["key", "n"])
    return frame[frame.set_index(["key", "n"]).index.isin(wanted)].reset_index(drop=True)


def _run_spec(lm, spec, tasks, store, settings, session) -> list[tuple[str, int]]:
    """Evaluate one compression of one model on its tasks; compress only if something is missing."""
    todo, done, kl = [], [], []
    for task in tasks:
        items = requests(lm, task, session)
        limit = task.limit if task.limit is not None else settings.limit
        n = len(items) if limit is None else min(limit, len(items))
        key, fields = run_key(lm, spec, task, session.items(task)[1], settings.seed, session)
        done.append((key, n))
        if store.scores(key, n) is None:
            todo.append((task, items[:n], key, fields))
        if settings.divergence and not spec.is_dense and divergence.applies(task):
            missing = _kl_missing(store, key, n)
            if missing:  # the dense model's side now, while its weights are in place
                ctxs = divergence.contexts(lm.tokenizer, task, [items[i] for i in missing])
                kl.append((task, key, n, missing, ctxs,
                           session.dense_distributions(lm, task, ctxs, settings.batch_size)))
    if todo or kl:
        _evaluate(lm, spec, todo, store, settings, session, kl)
    for task, (key, n) in zip(tasks, list(done)):  # dense weights are back in place here
        if hasattr(task.module, "fluency_context"):
            posthoc.fluency(lm, store, key, n, task.module, settings.batch_size)
        if settings.judge is not None and hasattr(task.module, "RUBRIC"):
            done.append((posthoc.judge_run(store, key, n, task.module, settings.judge,
                                           settings.progress), n))
    return done


def _evaluate(lm, spec, todo, store, settings, session, kl=()) -> None:
    with compress.compressed(lm, spec, session.calibration(lm, spec)) as (clm, report):
        weights = models.weight_stats(clm.model)
        for task, items, key, fields in todo:
            # store.put_run appends this to the run's provenance: every sample it stores next
            # points at it, so extending a run later never rewrites where older samples came from
            meta = {"key_scheme": versions.KEY_SCHEME, "key_fields": fields,
                    "model_fingerprints": lm.fingerprints, "model_name": lm.name,
                    "dtype": str(lm.dtype),
                    "template": task.template_name, "data_source": str(task.data or "project"),
                    "compression": report, "weights": weights, "git": _git_hash(),
                    "git_dirty": _git_dirty(),
                    "time": time.time()}
            store.put_run(key, lm.name, spec.key(), task.name, meta)
            RUNNERS[task.module.KIND](clm, task, items, key, store, settings)
            _score(store, key, len(items), task)
        for task, key, n, missing, ctxs, dense_file in kl:
            _divergence(clm, lm, spec, task, key, n, missing, ctxs, dense_file, store, settings,
                        session)


def _kl_missing(store: Store, key: str, n: int) -> list[int]:
    """Item indices among the first n whose KL from dense is not stored under the current
    DIVERGENCE version (every index when the run holds none, or an older version's)."""
    run = store.run(key)
    if run is None or run["meta"].get("kl", {}).get("version") != versions.DIVERGENCE:
        return list(range(n))
    samples = store.samples(key, n)
    have = set(samples.idx[samples.kl.notna()]) if "kl" in samples.columns else set()
    return [i for i in range(n) if i not in have]


def _divergence(clm, lm, spec, task, key, n, missing, ctxs, dense_file, store, settings,
                session) -> None:
    """Per-sample KL(dense || compressed) of the missing items, merged into the run's samples;
    the run's `kl` score; a provenance row saying what made it (divergence.py)."""
    pad_id = clm.tokenizer.pad_token_id or 0
    values = divergence.per_item(dense_file, clm.model, ctxs, pad_id, settings.batch_size)
    run = store.run(key)
    dense_key, _ = run_key(lm, CompressionSpec("dense"), task, session.items(task)[1],
                           settings.seed, session)
    store.put_run(key, run["model"], run["spec"], run["task"], {**run["meta"], "kl": {
        "version": versions.DIVERGENCE, "definition": divergence.DEFINITION,
        "dense_key": dense_key, "time": time.time()}})
    store.merge_metrics(key, {i: {"kl": v} for i, v in zip(missing, values)})
    samples = store.samples(key, n)
    store.put_scores(key, n, {"kl": stats.aggregate(samples.kl, how="mean")})


def _score(store: Store, key: str, n: int, task: TaskSpec) -> None:
    """Aggregate every per-sample metric the task declares, each as its Metric says; a
    dialogue's intervals resample whole conversations (results.units)."""
    samples = store.samples(key, n)
    groups = results.sample_units(task.name, samples)  # a dialogue's turns resample together
    scores = {}
    for m in task.module.METRICS:
        if m.aggregate == "ppl" and task.module.KIND == "rolling":  # token-weighted NLL, then exp
            scores[m.name] = stats.aggregate(samples["nll"] / samples["tokens"], samples["tokens"], "ppl")
        elif m.name in samples.columns and m.aggregate != "ppl":
            scores[m.name] = stats.aggregate(samples[m.name], how=m.aggregate, groups=groups)
    store.put_scores(key, n, scores)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _git_dirty() -> bool | None:
    """Whether the package's tracked files differ from the commit _git_hash names."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                             capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None

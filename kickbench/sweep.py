"""A grid of models x compressions x tasks: plan it, run it with reuse, store every number."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__, compress, models, posthoc, stats
from .compress import calibration
from .compress.spec import CompressionSpec
from .engine import iter_generate, iter_window_nll, loglikelihood, render
from .store import Store, result_key
from .tasks import TaskSpec
from .tasks.data import items_hash


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
    exception raised there (e.g. Cancelled) stops the run with every finished batch kept."""

    limit: int | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 64
    seed: int = 0
    progress: bool = True
    judge: object | None = None
    on_progress: Callable[[str, int, int], None] | None = None


class Cancelled(Exception):
    """Raised from Settings.on_progress to stop a run between two stored batches."""


def _report(settings: Settings, desc: str, done: int, total: int) -> None:
    if settings.on_progress is not None:
        settings.on_progress(desc, done, total)


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


_MODELS: dict[tuple, models.LoadedModel] = {}
_ITEMS: dict[TaskSpec, tuple[list[dict], str]] = {}
_CALIBRATIONS: dict[tuple, calibration.Calibration] = {}


def load_model(name: str, device=None, dtype=None) -> models.LoadedModel:
    """Load once per process (the dense weights are restored after every compression)."""
    key = (name, str(device), str(dtype))
    if key not in _MODELS:
        _MODELS[key] = models.load(name, device=device, dtype=dtype)
    return _MODELS[key]


def load_items(task: TaskSpec) -> tuple[list[dict], str]:
    if task not in _ITEMS:
        items = task.module.load(task.data)
        _ITEMS[task] = items, items_hash(items)
    return _ITEMS[task]


def calibration_for(lm: models.LoadedModel, spec: CompressionSpec) -> calibration.Calibration | None:
    """Calibration windows per (model, calibration spec): shared by every level of a sweep."""
    cspec = compress.calibration_spec(spec)
    if cspec is None:
        return None
    key = (lm.fingerprint, cspec)
    if key not in _CALIBRATIONS:
        _CALIBRATIONS[key] = calibration.prepare(lm.tokenizer, cspec)
    return _CALIBRATIONS[key]


def run_key(lm: models.LoadedModel, spec: CompressionSpec, task: TaskSpec, data_hash: str,
            seed: int) -> tuple[str, dict]:
    module = task.module
    cal = calibration_for(lm, spec)
    fields = {
        "model": lm.fingerprint, "device": lm.device.type, "spec": spec.key(),
        "calibration": cal.hash if cal else None,
        "task": module.NAME, "task_version": module.VERSION, "data": data_hash,
        "template": module.TEMPLATES[task.template_name], "decoding": _decoding(lm, task),
        "seed": seed, "kickbench": __version__, "torch": torch.__version__,
        "transformers": _transformers_version(),
    }
    return result_key(fields), fields


def _decoding(lm: models.LoadedModel, task: TaskSpec) -> dict:
    module = task.module
    if module.KIND in ("generate", "dialogue"):
        return generation_config(task).key()
    if module.KIND == "choice":
        return {"loglikelihood": True, "max_context": module.MAX_CONTEXT}
    return {"window": window_of(lm, task), "stride": task.stride}


def generation_config(task: TaskSpec, batch_size: int | None = None):
    config = replace(task.module.GENERATION, temperature=task.temperature or 0.0)
    return replace(config, batch_size=batch_size) if batch_size else config


def window_of(lm: models.LoadedModel, task: TaskSpec) -> int:
    return task.window or task.module.default_window(lm.model.config)


_WINDOWS: dict[tuple, list[dict]] = {}


def requests(lm: models.LoadedModel, task: TaskSpec, items: list[dict]) -> list[dict]:
    """What is evaluated item by item: the items, one sample per turn for dialogues, or token
    windows for rolling tasks."""
    if task.module.KIND == "dialogue":
        return task.module.expand(items)
    if task.module.KIND != "rolling":
        return items
    key = (lm.name, task)
    if key not in _WINDOWS:
        wins = task.module.windows(lm.tokenizer, items, window_of(lm, task), task.stride)
        _WINDOWS[key] = [{"id": f"window-{i}", **w} for i, w in enumerate(wins)]
    return _WINDOWS[key]


def execute(runs: list[Run], store: Store, settings: Settings = Settings()) -> pd.DataFrame:
    """Run every planned point not already in the store; return their results (tidy frame)."""
    done: list[tuple[str, int]] = []
    for model_name in dict.fromkeys(r.model for r in runs):
        lm = load_model(model_name, settings.device, settings.dtype)
        model_runs = [r for r in runs if r.model == model_name]
        for r in model_runs:
            compress.check(r.spec, lm.model)  # e.g. N:M widths, before any slow work
        for spec in dict.fromkeys(r.spec for r in model_runs):
            tasks = [r.task for r in model_runs if r.spec == spec]
            done += _run_spec(lm, spec, tasks, store, settings)
    frame = store.frame()
    wanted = pd.MultiIndex.from_tuples(done, names=["key", "n"])
    return frame[frame.set_index(["key", "n"]).index.isin(wanted)].reset_index(drop=True)


def _run_spec(lm, spec, tasks, store, settings) -> list[tuple[str, int]]:
    """Evaluate one compression of one model on its tasks; compress only if something is missing."""
    todo, done = [], []
    for task in tasks:
        items, data_hash = load_items(task)
        items = requests(lm, task, items)
        limit = task.limit if task.limit is not None else settings.limit
        n = len(items) if limit is None else min(limit, len(items))
        key, fields = run_key(lm, spec, task, data_hash, settings.seed)
        done.append((key, n))
        if store.scores(key, n) is None:
            todo.append((task, items[:n], key, fields))
    if todo:
        _evaluate(lm, spec, todo, store, settings)
    for task, (key, n) in zip(tasks, list(done)):  # dense weights are back in place here
        if hasattr(task.module, "fluency_context"):
            posthoc.fluency(lm, store, key, n, task.module, settings.batch_size)
        if settings.judge is not None and hasattr(task.module, "RUBRIC"):
            done.append((posthoc.judge_run(store, key, n, task.module, settings.judge,
                                           settings.progress), n))
    return done


def _evaluate(lm, spec, todo, store, settings) -> None:
    with compress.compressed(lm, spec, calibration_for(lm, spec)) as (clm, report):
        weights = models.weight_stats(clm.model)
        for task, items, key, fields in todo:
            meta = {"key_fields": fields, "model_name": lm.name, "dtype": str(lm.dtype),
                    "template": task.template_name, "data_source": str(task.data or "project"),
                    "compression": report, "weights": weights, "git": _git_hash(),
                    "time": time.time()}
            store.put_run(key, lm.name, spec.key(), task.name, meta)
            MISSING[task.module.KIND](clm, task, items, key, store, settings)
            _score(store, key, len(items), task)


def _generate_missing(lm, task, items, key, store, settings) -> None:
    pending = _pending(store, key, len(items))
    prompts = [task.module.prompt(items[i], task.template_name) for i in pending]
    _generate(lm, task, items, key, store, settings, pending, prompts)


def _dialogue_missing(lm, task, items, key, store, settings) -> None:
    """Turn by turn: a later turn's prompt holds the model's own stored earlier answers."""
    for turn in range(max((it["turn"] for it in items), default=-1) + 1):
        pending = [i for i in _pending(store, key, len(items)) if items[i]["turn"] == turn]
        if not pending:
            continue
        done = store.samples(key, len(items))
        answers = dict(zip(done.item_id, done.output)) if len(done) else {}
        prompts = [task.module.prompt(items[i], task.template_name,
                                      task.module.history(items[i], answers)) for i in pending]
        _generate(lm, task, items, key, store, settings, pending, prompts)


def _generate(lm, task, items, key, store, settings, pending, prompts) -> None:
    if not pending:
        return
    module = task.module
    config = generation_config(task, settings.batch_size)
    torch.manual_seed(settings.seed)
    desc, finished = f"{task.name} | {key[:8]}", 0
    for batch in iter_generate(lm.model, lm.tokenizer, prompts, config, settings.progress, desc):
        records = []
        for j, gen in batch:
            item = items[pending[j]]
            text = render(lm.tokenizer, prompts[j])[0]
            records.append({"idx": pending[j], "item": _public(item), "prompt": text, "output": gen.text,
                            "metrics": module.score(item, text, gen.text),
                            "new_tokens": gen.new_tokens})
        store.add_samples(key, records)  # per batch: an interruption keeps what finished
        finished += len(batch)
        _report(settings, desc, finished, len(pending))


ROLLING_TOKENS = 2048  # tokens per perplexity forward: 2048 x 49k-vocab fp32 logits is ~0.4 GB


def _pending(store: Store, key: str, n: int) -> list[int]:
    """Indices among the first n that have no stored sample yet (resume)."""
    finished = store.done_indices(key)
    return [i for i in range(n) if i not in finished]


def _rolling_missing(lm, task, items, key, store, settings) -> None:
    pending = _pending(store, key, len(items))
    wins = [items[i]["ids"] for i in pending]
    batch_size = max(1, min(settings.batch_size, ROLLING_TOKENS // max(map(len, wins), default=1)))
    desc, finished = f"{task.name} | {key[:8]}", 0
    for batch in iter_window_nll(lm.model, wins, batch_size, settings.progress, desc,
                                 [items[i]["skip"] for i in pending]):
        store.add_samples(key, [
            {"idx": pending[j], "item": {"id": items[pending[j]]["id"]}, "prompt": "",
             "output": "", "metrics": {"nll": nll, "tokens": t}, "new_tokens": 0}
            for j, nll, t in batch])
        finished += len(batch)
        _report(settings, desc, finished, len(pending))


CHOICE_CHUNK = 128  # items scored and stored together (an interruption loses at most these)


def _choice_missing(lm, task, items, key, store, settings) -> None:
    module, pending = task.module, _pending(store, key, len(items))
    desc = f"{task.name} | {key[:8]}"
    bar = tqdm(total=len(pending), desc=desc, disable=not settings.progress, unit="item")
    built = {i: module.requests(items[i], task.template_name, lm.tokenizer) for i in pending}
    # items with the same k-shot preamble side by side, so each chunk shares preambles
    pending = sorted(pending, key=lambda i: next(iter(built[i].values())).context)
    for start in range(0, len(pending), CHOICE_CHUNK):
        chunk = pending[start:start + CHOICE_CHUNK]
        reqs = [built[i] for i in chunk]
        flat = [(j, name, r) for j, rs in enumerate(reqs) for name, r in rs.items()]
        results = loglikelihood(lm.model, lm.tokenizer, [r for _, _, r in flat],
                                settings.batch_size, progress=False)
        per_item: list[dict] = [{} for _ in chunk]
        for (j, name, _), res in zip(flat, results):
            per_item[j][name] = res
        store.add_samples(key, [
            {"idx": i, "item": _public(items[i]), "prompt": reqs[j][next(iter(reqs[j]))].context,
             "output": module.answer_text(items[i], per_item[j]),
             "metrics": module.score(items[i], per_item[j]), "new_tokens": 0}
            for j, i in enumerate(chunk)])
        bar.update(len(chunk))
        _report(settings, desc, start + len(chunk), len(pending))
    bar.close()


def _public(item: dict) -> dict:
    """The item as stored with a sample: without private fields (e.g. MMLU's shots)."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


MISSING = {"generate": _generate_missing, "dialogue": _dialogue_missing, "choice": _choice_missing,
           "rolling": _rolling_missing}


def _score(store: Store, key: str, n: int, task: TaskSpec) -> None:
    samples = store.samples(key, n)
    if task.module.KIND == "rolling":  # token-weighted mean NLL over windows, then exp
        ppl = stats.aggregate(samples["nll"] / samples["tokens"], samples["tokens"], "ppl")
        store.put_scores(key, n, {"perplexity": ppl})
        return
    metrics = [c for c in samples.columns if c in set(task.module.SCORINGS.values())]
    store.put_scores(key, n, {m: stats.aggregate(samples[m]) for m in metrics})


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

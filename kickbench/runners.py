"""One executor per request kind: each evaluates the missing samples of one run on a model and
stores them batch by batch (an interruption keeps every finished batch).

All share one signature: run(lm, task, items, key, store, settings). The kinds are the tasks'
request types: `generate` (a prompt, greedy or sampled text), `dialogue` (turns whose prompts
hold the model's own earlier answers), `choice` (log-likelihood of each option), `rolling`
(token windows for perplexity).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from tqdm.auto import tqdm

from .engine import encode, iter_generate, iter_window_nll, loglikelihood, render
from .store import Store


def notify(settings, desc: str, done: int, total: int) -> None:
    """Settings.on_progress after a stored batch (it may raise Cancelled to stop the run)."""
    if settings.on_progress is not None:
        settings.on_progress(desc, done, total)


def generation_config(task, batch_size: int | None = None):
    base = getattr(task.module, "GENERATIONS", {}).get(task.template_name, task.module.GENERATION)
    config = replace(base, temperature=task.temperature or 0.0)
    return replace(config, batch_size=batch_size) if batch_size else config


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
    for batch in iter_generate(lm.model, lm.tokenizer, prompts, config, settings.progress, desc,
                               budgets(lm.tokenizer, task, prompts, config)):
        records = []
        for j, gen in batch:
            item = items[pending[j]]
            text = render(lm.tokenizer, prompts[j])[0]
            records.append({"idx": pending[j], "item": _public(item), "prompt": text, "output": gen.text,
                            "metrics": module.score(item, text, gen.text),
                            "new_tokens": gen.new_tokens})
        store.add_samples(key, records)  # per batch: an interruption keeps what finished
        finished += len(batch)
        notify(settings, desc, finished, len(pending))


def budgets(tokenizer, task, prompts, config) -> list[int] | None:
    """Each prompt's max_new_tokens where the task ties it to the prompt's length
    (BUDGETS[template], e.g. factoid:llmkick), at most the config's; None: the config's for all."""
    budget = getattr(task.module, "BUDGETS", {}).get(task.template_name)
    if budget is None:
        return None
    return [max(1, min(config.max_new_tokens, budget(len(ids))))
            for ids in encode(tokenizer, prompts)]


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
        notify(settings, desc, finished, len(pending))


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
        notify(settings, desc, start + len(chunk), len(pending))
    bar.close()


def _public(item: dict) -> dict:
    """The item as stored with a sample: without private fields (e.g. MMLU's shots)."""
    return {k: v for k, v in item.items() if not k.startswith("_")}



RUNNERS = {"generate": _generate_missing, "dialogue": _dialogue_missing, "choice": _choice_missing,
           "rolling": _rolling_missing}

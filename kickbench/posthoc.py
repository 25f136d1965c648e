"""Stages that read a finished run's stored outputs, with the dense model back in place:
LLM judging of free-form answers, and the dense model's fluency of every answer."""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from . import judge as J
from . import results, stats
from .engine import Choice, loglikelihood
from .store import Store, result_key
from .tasks import metrics

JUDGE_CHUNK = 16  # samples judged and stored together


def judge_key(key: str, judge: J.Judge, rubric) -> tuple[str, dict]:
    fields = {"run": key, "judge": judge.identity, "rubric": rubric.name,
              "protocol": J.PROTOCOL_VERSION}
    return result_key(fields), fields


def judge_run(store: Store, key: str, n: int, module, judge: J.Judge,
              progress: bool = True) -> str:
    """Judge the first n samples of run `key`; scores go under their own key (the run's key +
    the judge's identity), per-sample verdicts with them. Returns that key."""
    jkey, fields = judge_key(key, judge, module.RUBRIC)
    if store.scores(jkey, n) is not None:
        return jkey
    run = store.run(key)
    store.put_run(jkey, run["model"], run["spec"], run["task"],
                  {**run["meta"], "judge": judge.identity, "judge_label": judge.label,
                   "judged_run": key, "judge_fields": fields, "time": time.time()})
    samples = store.samples(key, n)
    answers = dict(zip(samples.item_id, samples.output))
    history = getattr(module, "history", lambda item, answers: [])
    finished = store.done_indices(jkey)
    todo = [s for _, s in samples.iterrows() if s["idx"] not in finished]
    bar = tqdm(total=len(todo), desc=f"judge {judge.label} | {key[:8]}", disable=not progress)
    for start in range(0, len(todo), JUDGE_CHUNK):
        chunk = todo[start:start + JUDGE_CHUNK]
        reqs = [module.judge_request(s["item"], s["output"], history(s["item"], answers))
                for s in chunk]
        verdicts = J.assess(judge, module.RUBRIC, reqs, store)
        store.add_samples(jkey, [
            {"idx": int(s["idx"]), "item": s["item"], "prompt": "", "new_tokens": 0,
             "output": "\n[order 2]\n".join(v.replies),
             "metrics": J.sample_metrics(module.RUBRIC, [v])} for s, v in zip(chunk, verdicts)])
        bar.update(len(chunk))
    bar.close()
    judged = store.samples(jkey, n)
    groups = results.sample_units(module.NAME, judged)  # a dialogue's turns resample together
    store.put_scores(jkey, n, {m.name: stats.aggregate(judged[m.name], how=m.aggregate,
                                                       groups=groups)
                               for m in (*metrics.aspects(module.RUBRIC), *metrics.JUDGE)})
    return jkey


def fluency(lm, store: Store, key: str, n: int, module, batch_size: int = 16) -> None:
    """Per-sample `answer_nll`/`answer_tokens`: the dense model's log-loss of each answer after
    the task's short question prompt (`module.fluency_context`; a fluency proxy: a plausible
    wrong answer scores low, gibberish high), and the run's token-weighted `answer_ppl`.
    Needs the dense weights."""
    scores = store.scores(key, n) or {}
    if "answer_ppl" in scores:
        return
    samples = store.samples(key, n)
    todo = samples[samples.output.str.strip() != ""] if "answer_nll" not in samples else \
        samples[samples.answer_nll.isna() & (samples.output.str.strip() != "")]
    if len(todo):
        reqs = [Choice(module.fluency_context(it), (o,)) for it, o in zip(todo.item, todo.output)]
        results = loglikelihood(lm.model, lm.tokenizer, reqs, batch_size, progress=False)
        store.merge_metrics(key, {int(i): {"answer_nll": -r.logprobs[0], "answer_tokens": r.tokens[0]}
                                  for i, r in zip(todo.idx, results)})
        samples = store.samples(key, n)
    nll = samples.get("answer_nll", np.full(len(samples), np.nan))
    tokens = samples.get("answer_tokens", np.zeros(len(samples)))
    per_token = np.asarray(nll, float) / np.maximum(np.asarray(tokens, float), 1)
    store.put_scores(key, n, {"answer_ppl": stats.aggregate(per_token, np.nan_to_num(tokens), "ppl")})

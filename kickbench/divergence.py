"""KL(dense || compressed) of next-token distributions on a task's own prompts (issue 17):
a divergence from the dense model that moves before accuracy does.

What is compared, per item: the next-token distribution at the last position of the item's
prompt, i.e. the distribution the model draws its first answer token from. Generation tasks
(factoid, icraqa, icsum): the prompt as the generation engine encodes it (rendered, BOS as the
tokenizer adds it). Choice tasks (MMLU): the item's first request's context as the
log-likelihood engine encodes it (trailing whitespace moves to the continuation, so the
position after "Answer:"). Per item KL = sum_v p_dense(v) (log p_dense(v) - log p_comp(v)) in
nats, from fp32 log-softmax of the model's logits; the run's value is the mean over items with
the usual bootstrap interval. Dialogue tasks are left out (a later turn's prompt holds each
model's own earlier answers, so the two models do not read the same prompt).

Reproducible and stored with what made it: the dense model's distributions are computed with
the dense weights of the same loaded model (same fingerprint, dtype, device) on the same
prompts, kept for the session in a temporary .npy file per (model, task, items) (vocab-sized
rows never reach SQLite), and each compressed run gets per-sample `kl` merged into its stored
samples, a `kl` score, and a provenance row naming DIVERGENCE (versions.py), the dense run's
key and this definition. Paired with dense by results.paired_frame (PAIR_MEASURES)."""

from __future__ import annotations

import hashlib
import json
from typing import Iterator

import numpy as np
import torch

from . import engine, stats
from .tasks import metrics

KINDS = ("generate", "choice")  # request kinds whose prompts both models read alike
DEFINITION = "KL(dense || compressed), nats, next-token distribution at the prompt's last position"
METRIC = metrics.DIVERGENCE[0]


def applies(task) -> bool:
    return task.module.KIND in KINDS


def contexts(tokenizer, task, items) -> list[list[int]]:
    """Token ids of each item's prompt, up to the compared position (see the module doc)."""
    module = task.module
    if module.KIND == "generate":
        return engine.encode(tokenizer, [module.prompt(it, task.template_name) for it in items])
    firsts = [next(iter(module.requests(it, task.template_name, tokenizer).values())) for it in items]
    return [engine.encode_choice(tokenizer, r)[0] for r in firsts]


def contexts_hash(ctxs: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(ctxs).encode()).hexdigest()


def iter_logprobs(model, ctxs: list[list[int]], pad_id: int, batch_size: int
                  ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(context indices, their last-position log-probs [B, vocab], fp32) batch by batch, with
    the log-likelihood engine's own batching: contexts grouped by their first tokens, a
    group's common prefix encoded once (where prefix sharing is safe), length buckets."""
    order = sorted(range(len(ctxs)), key=lambda i: (ctxs[i][:engine.PREFIX_KEY], -len(ctxs[i])))
    device = next(model.parameters()).device
    safe = engine.prefix_sharing_safe(model)
    limit = engine.batch_limit(batch_size, device, len(order))
    for run in engine._runs(order, ctxs):
        n = engine.shared_prefix_len([ctxs[i] for i in run]) if safe else 0
        shared = engine.prefix_cache(model, ctxs[run[0]][:n], device) if n else None
        for bucket in engine._bucketed(run, ctxs, limit):
            last, _, _ = engine._score_contexts(model, [ctxs[i] for i in bucket], pad_id, device,
                                                n, shared, keep_cache=False)
            yield bucket, last.float().cpu()


def kl(dense: torch.Tensor, comp: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(dense || comp) of log-prob rows: tokens dense gives no mass add nothing; a
    token comp gives no mass and dense does makes it inf (as it is)."""
    p = dense.exp()
    terms = torch.where(p > 0, p * (dense - comp), torch.zeros_like(p))
    return terms.sum(-1)


def write_dense(path, model, ctxs, pad_id: int, batch_size: int) -> None:
    """The dense model's distributions of every context, row i for context i, into an .npy
    file (memory-mapped: vocab x items floats stay on disk)."""
    rows = None
    for idx, logp in iter_logprobs(model, ctxs, pad_id, batch_size):
        if rows is None:
            rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                             shape=(len(ctxs), logp.shape[-1]))
        rows[idx] = logp.numpy()
    if rows is not None:
        rows.flush()


def per_item(dense_path, model, ctxs, pad_id: int, batch_size: int) -> list[float]:
    """KL(dense || this model) of every context, against the dense rows written before."""
    dense = np.load(dense_path, mmap_mode="r")
    out = [float("nan")] * len(ctxs)
    for idx, logp in iter_logprobs(model, ctxs, pad_id, batch_size):
        values = kl(torch.from_numpy(np.asarray(dense[idx])), logp)
        for i, v in zip(idx, values.tolist()):
            out[i] = v
    return out


def paired_kl(dense_samples, comp_samples, row) -> dict:
    """results.PAIR_MEASURES: the compressed run's mean KL from dense on the paired items
    (those both runs measured), with its bootstrap interval; {} where it was not measured."""
    if "kl" not in comp_samples.columns or dense_samples.empty:
        return {}
    both = comp_samples[comp_samples.idx.isin(dense_samples.idx)]
    values = both.kl.astype(float).dropna()
    if values.empty:
        return {}
    mean, lo, hi = stats.bootstrap_ci(values.to_numpy())
    return {"kl": mean, "kl_low": lo, "kl_high": hi, "kl_items": len(values)}

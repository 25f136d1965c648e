"""Every forward pass of evaluation: batched, length-sorted greedy generation with stop strings."""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

Prompt = str | list  # a plain string, or chat messages [{"role": ..., "content": ...}]


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; everything here except batch_size can change an answer. Greedy unless
    temperature > 0 (sampling from the seeded torch generator: reproducible for the same
    batch size)."""

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    batch_size: int = 16
    temperature: float = 0.0

    def key(self) -> dict:
        d = asdict(self)
        d.pop("batch_size")  # batching never changes greedy results (tested)
        if not d["temperature"]:
            d.pop("temperature")  # greedy keys stay what they were before sampling existed
        return d


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int


def render(tokenizer, prompt: Prompt) -> tuple[str, bool]:
    """Prompt text and whether the tokenizer must still add its special tokens (BOS)."""
    if isinstance(prompt, str):
        return prompt, True
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return text, False  # the template already wrote BOS/role tokens


def encode(tokenizer, prompts: Sequence[Prompt]) -> list[list[int]]:
    out = []
    for p in prompts:
        text, special = render(tokenizer, p)
        out.append(tokenizer(text, add_special_tokens=special)["input_ids"])
    return out


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to (not including) the earliest stop string."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


MIN_SHARED_PREFIX = 8  # tokens; below this a shared KV cache is not worth its copies


def shared_prefix_len(encoded: Sequence[Sequence[int]]) -> int:
    """Longest token prefix common to all prompts, leaving each at least one token to feed."""
    if len(encoded) < 2:
        return 0
    first, limit = encoded[0], min(len(e) for e in encoded) - 1
    n = 0
    while n < limit and all(e[n] == first[n] for e in encoded):
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def prefix_sharing_safe(model) -> bool:
    """A shared prefix puts padding between it and each suffix; sliding-window attention counts
    window slots, not tokens, so padding there would change what a token sees (Gemma 3)."""
    cfg = model.config
    return not (getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True))


def _left_pad(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def iter_generate(model, tokenizer, prompts: Sequence[Prompt], config: GenerationConfig,
                  progress: bool = True, desc: str = "generate"
                  ) -> Iterator[list[tuple[int, Generation]]]:
    """Yield [(input index, Generation)] one batch at a time, longest prompts first."""
    encoded = encode(tokenizer, prompts)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    # A few-shot preamble shared by every prompt is encoded once for the whole request set
    # (not per batch, so results cannot depend on batching); each batch gets a copy of its
    # KV cache and its suffixes are left-padded after it.
    n_shared = shared_prefix_len(encoded) if prefix_sharing_safe(model) else 0
    shared = prefix_cache(model, encoded[0][:n_shared], device) if n_shared else None
    # Stop strings are checked on decoded text, so a stop that spans tokens still stops.
    stop_kwargs = {"stop_strings": list(config.stop), "tokenizer": tokenizer} if config.stop else {}
    bar = tqdm(total=len(order), desc=desc, disable=not progress, unit="prompt")
    for start in range(0, len(order), config.batch_size):
        idx = order[start:start + config.batch_size]
        ids, mask = _left_pad([encoded[i][n_shared:] for i in idx], tokenizer.pad_token_id, device)
        cache_kwargs = {}
        if shared is not None:
            prefix = torch.tensor([encoded[idx[0]][:n_shared]], device=device).expand(len(idx), -1)
            ids, mask = torch.cat([prefix, ids], 1), torch.cat([torch.ones_like(prefix), mask], 1)
            cache = copy.deepcopy(shared)
            cache.batch_repeat_interleave(len(idx))
            cache_kwargs["cache"] = cache
        with torch.inference_mode():
            sample = config.temperature > 0
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=sample, **cache_kwargs,
                                 max_new_tokens=config.max_new_tokens, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id,
                                 temperature=config.temperature if sample else None,
                                 top_p=None, top_k=None, **stop_kwargs)
        new = out[:, ids.shape[1]:]
        results = []
        for row, i in enumerate(idx):
            toks = [t for t in new[row].tolist() if t != tokenizer.pad_token_id]
            text = tokenizer.decode(toks, skip_special_tokens=True)
            results.append((i, Generation(cut_at_stop(text, config.stop), len(toks))))
        bar.update(len(idx))
        yield results
    bar.close()


def prefix_cache(model, ids: list[int], device):
    """The KV cache of one token sequence (its logits are not needed: only the last is kept)."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1)
    return out.cache


def generate(model, tokenizer, prompts: Sequence[Prompt], config: GenerationConfig,
             progress: bool = True) -> list[Generation]:
    """Greedy generations for all prompts, returned in input order."""
    out: list[Generation | None] = [None] * len(prompts)
    for batch in iter_generate(model, tokenizer, prompts, config, progress):
        for i, g in batch:
            out[i] = g
    return out


def iter_window_nll(model, windows: Sequence[Sequence[int]], batch_size: int = 8,
                    progress: bool = True, desc: str = "perplexity",
                    skips: Sequence[int] | None = None) -> Iterator[list[tuple[int, float, int]]]:
    """Yield [(window index, summed NLL, scored tokens)] per batch; every token but each
    window's first is scored against the window's own prefix, except the first skips[i]
    targets of window i (sliding windows score only their new tokens)."""
    device = next(model.parameters()).device
    bar = tqdm(total=len(windows), desc=desc, disable=not progress, unit="window")
    for start in range(0, len(windows), batch_size):
        idx = list(range(start, min(start + batch_size, len(windows))))
        width = max(len(windows[i]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        scored = torch.zeros((len(idx), width - 1), dtype=torch.long)
        for row, i in enumerate(idx):  # right padding: positions start at 0 for every window
            ids[row, :len(windows[i])] = torch.tensor(windows[i])
            mask[row, :len(windows[i])] = 1
            scored[row, (skips[i] if skips else 0):len(windows[i]) - 1] = 1
        ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
            nll = (nll * scored).sum(dim=1)
        bar.update(len(idx))
        yield [(i, nll[row].item(), int(scored[row].sum())) for row, i in enumerate(idx)]
    bar.close()


# ---- log-likelihood of continuations (multiple choice, cloze) ----

@dataclass(frozen=True)
class Choice:
    """Score each continuation after one shared context."""

    context: str
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class ChoiceResult:
    logprobs: tuple[float, ...]  # summed log-probability of each continuation
    tokens: tuple[int, ...]      # its token count
    greedy: tuple[bool, ...]     # every token of it is the argmax (lm-eval's is_greedy)
    next_token: str              # the greedy token after the context (legacy MMLU scoring)


def encode_choice(tokenizer, request: Choice) -> tuple[list[int], list[list[int]]]:
    """Context ids and each continuation's ids, split as lm-eval does: trailing whitespace of
    the context moves to the continuation, and the continuation is what encoding the whole
    text adds beyond the (stripped) context's own encoding."""
    ctx = request.context.rstrip()
    tail = request.context[len(ctx):]
    ctx_ids = tokenizer(ctx)["input_ids"]
    conts = []
    for cont in request.continuations:
        piece = tokenizer(ctx + tail + cont)["input_ids"][len(ctx_ids):]
        if not piece:
            raise ValueError(f"continuation {cont!r} encodes to no tokens after the context")
        conts.append(piece)
    return ctx_ids, conts


PREFIX_KEY = 64  # tokens: requests are grouped by their first tokens, then sorted by length


def iter_loglikelihood(model, tokenizer, requests: Sequence[Choice], batch_size: int = 16,
                       reuse_prefix: bool = True, progress: bool = True,
                       desc: str = "loglikelihood") -> Iterator[list[tuple[int, ChoiceResult]]]:
    """Yield [(request index, ChoiceResult)] per batch.

    Each context runs once (left-padded, explicit positions) and only its last position's
    logits are computed: every single-token continuation is scored from that pass. Requests
    are grouped by their opening tokens, so a batch's common prefix (a k-shot preamble) is
    encoded once and its KV cache shared (reuse_prefix). Longer continuations then continue
    from each context's KV cache (reuse_prefix) or, for comparison, run as whole context +
    continuation rows."""
    encoded = [encode_choice(tokenizer, r) for r in requests]
    order = sorted(range(len(encoded)),
                   key=lambda i: (encoded[i][0][:PREFIX_KEY], -len(encoded[i][0])))
    device = next(model.parameters()).device
    bar = tqdm(total=len(order), desc=desc, disable=not progress, unit="request")
    for idx in _batches(order, [e[0] for e in encoded], batch_size):
        ctxs = [encoded[i][0] for i in idx]
        conts = [encoded[i][1] for i in idx]
        long = any(len(c) > 1 for cs in conts for c in cs)
        last, cache, mask = _score_contexts(model, ctxs, tokenizer.pad_token_id or 0, device,
                                            share=reuse_prefix, keep_cache=long and reuse_prefix)
        first = [[(last[r, c[0]].item(), bool(last[r].argmax() == c[0])) for c in cs]
                 for r, cs in enumerate(conts)]
        rest = {}
        if long:
            rest = (_continue_from_cache(model, cache, mask, conts, device)
                    if reuse_prefix else _concatenated(model, ctxs, conts, device))
        results = []
        for r, i in enumerate(idx):
            lp, greedy = [], []
            for k, c in enumerate(conts[r]):
                l0, g0 = first[r][k]
                l1, g1 = rest.get((r, k), (0.0, True))
                lp.append(l0 + l1)
                greedy.append(g0 and g1)
            results.append((i, ChoiceResult(tuple(lp), tuple(len(c) for c in conts[r]),
                                            tuple(greedy), tokenizer.decode([int(last[r].argmax())]))))
        bar.update(len(idx))
        yield results
    bar.close()


def _batches(order: list[int], ctxs: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Batches of up to batch_size. Requests whose first PREFIX_KEY tokens agree (one
    subject's k-shot preamble; `order` sorts them together) are batched only with each other,
    so the preamble is encoded once per batch; the rest are pooled, longest first."""
    pool = []
    for _, run in itertools.groupby(order, key=lambda i: tuple(ctxs[i][:PREFIX_KEY])):
        run = list(run)
        if len(run) == 1:
            pool += run
        else:
            yield from (run[k:k + batch_size] for k in range(0, len(run), batch_size))
    pool.sort(key=lambda i: -len(ctxs[i]))
    yield from (pool[k:k + batch_size] for k in range(0, len(pool), batch_size))


def _score_contexts(model, ctxs, pad_id, device, share: bool, keep_cache: bool):
    """Last-position log-probs of each context ([B, vocab]), its KV cache (if kept) and the
    attention mask the cache goes with. A common prefix of the batch runs once (share)."""
    n = shared_prefix_len(ctxs) if share and prefix_sharing_safe(model) else 0
    cache = prefix_cache(model, ctxs[0][:n], device) if n else None
    if cache is not None:
        cache.batch_repeat_interleave(len(ctxs))
    ids, smask = _left_pad([c[n:] for c in ctxs], pad_id, device)
    mask = torch.cat([torch.ones((len(ctxs), n), dtype=smask.dtype, device=device), smask], 1)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(smask, n),
                    cache=cache, use_cache=keep_cache or cache is not None, logits_to_keep=1)
    last = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    return last, out.cache if keep_cache else None, mask


def _positions(mask: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding)."""
    return ((mask.cumsum(1) - 1).clamp(min=0) + offset).long()


def _continuation_scores(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor):
    """Per row: (sum of target log-probs, all targets greedy) over the valid positions."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets[..., None])[..., 0]
    hits = (logp.argmax(-1) == targets) | ~valid
    return (picked * valid).sum(1).tolist(), hits.all(1).tolist()


def _target_rows(seqs: list[list[int]], starts: list[int], targets: list[list[int]], device):
    """Right-padded ids of each fed sequence, its targets from position `start` on, and
    where those targets are (valid)."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    tgt = torch.zeros((len(seqs), width), dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for j, (seq, start, t) in enumerate(zip(seqs, starts, targets)):
        ids[j, :len(seq)] = torch.tensor(seq)
        tgt[j, start:len(seq)] = torch.tensor(t)
        valid[j, start:len(seq)] = True
    return ids.to(device), tgt.to(device), valid.to(device)


def _multi_token(conts) -> list[tuple[int, int]]:
    return [(r, k) for r, cs in enumerate(conts) for k, c in enumerate(cs) if len(c) > 1]


def _continue_from_cache(model, cache, ctx_mask, conts, device) -> dict:
    """Tokens 2.. of every multi-token continuation, fed after its context's cached keys."""
    rows = _multi_token(conts)
    ids, tgt, valid = _target_rows([conts[r][k][:-1] for r, k in rows], [0] * len(rows),
                                   [conts[r][k][1:] for r, k in rows], device)
    sel = torch.tensor([r for r, _ in rows], device=device)
    cache.batch_select_indices(sel)
    mask = torch.cat([ctx_mask[sel], valid.long()], 1)
    pos = ctx_mask[sel].sum(1, keepdim=True) + torch.arange(ids.shape[1], device=device)[None]
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                       cache=cache, use_cache=True).logits
    sums, greedy = _continuation_scores(logits, tgt, valid)
    return {row: (s, g) for row, s, g in zip(rows, sums, greedy)}


def _concatenated(model, ctxs, conts, device) -> dict:
    """The same scores from context + continuation rows (no cache; right-padded)."""
    rows = _multi_token(conts)
    seqs = [ctxs[r] + conts[r][k][:-1] for r, k in rows]
    ids, tgt, valid = _target_rows(seqs, [len(ctxs[r]) for r, _ in rows],
                                   [conts[r][k][1:] for r, k in rows], device)
    mask = (torch.arange(ids.shape[1], device=device)[None] < torch.tensor(
        [len(s) for s in seqs], device=device)[:, None]).long()
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    sums, greedy = _continuation_scores(logits, tgt, valid)
    return {row: (s, g) for row, s, g in zip(rows, sums, greedy)}


def loglikelihood(model, tokenizer, requests: Sequence[Choice], batch_size: int = 16,
                  reuse_prefix: bool = True, progress: bool = True) -> list[ChoiceResult]:
    """ChoiceResults for all requests, in input order."""
    out: list[ChoiceResult | None] = [None] * len(requests)
    for batch in iter_loglikelihood(model, tokenizer, requests, batch_size, reuse_prefix, progress):
        for i, res in batch:
            out[i] = res
    return out

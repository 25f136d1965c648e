"""Every forward pass of evaluation: batched, length-sorted greedy generation with stop strings."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

Prompt = str | list  # a plain string, or chat messages [{"role": ..., "content": ...}]


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy decoding settings; everything here except batch_size can change an answer."""

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    batch_size: int = 16

    def key(self) -> dict:
        d = asdict(self)
        d.pop("batch_size")  # batching never changes results (tested)
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
    n_shared = shared_prefix_len(encoded)
    shared = _prefix_cache(model, encoded[0][:n_shared], device) if n_shared else None
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
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **cache_kwargs,
                                 max_new_tokens=config.max_new_tokens, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None,
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


def _prefix_cache(model, ids: list[int], device):
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
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
                    progress: bool = True, desc: str = "perplexity"
                    ) -> Iterator[list[tuple[int, float, int]]]:
    """Yield [(window index, summed NLL, scored tokens)] per batch; every token but each
    window's first is scored against the window's own prefix."""
    device = next(model.parameters()).device
    bar = tqdm(total=len(windows), desc=desc, disable=not progress, unit="window")
    for start in range(0, len(windows), batch_size):
        idx = list(range(start, min(start + batch_size, len(windows))))
        width = max(len(windows[i]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # right padding: positions start at 0 for every window
            ids[row, :len(windows[i])] = torch.tensor(windows[i])
            mask[row, :len(windows[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
            nll = (nll * mask[:, 1:]).sum(dim=1)
        bar.update(len(idx))
        yield [(i, nll[row].item(), int(mask[row, 1:].sum())) for row, i in enumerate(idx)]
    bar.close()

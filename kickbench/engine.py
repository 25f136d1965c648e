"""Every forward pass of evaluation: generation, log-likelihood with shared contexts, rolling NLL.

Generation is a plain loop over a transformers model and its DynamicCache (no `generate`, no
logits processors or stopping-criteria objects): prompts are sorted by length, a preamble that
every prompt shares is encoded once, each batch is prefilled in length buckets that keep padding
small, then each step feeds one token per row; a row that has finished (EOS, a stop string in
its newly decoded tail, max_new_tokens) leaves the batch and its KV cache. An answer is the
generated text without its leading whitespace, up to the first stop string after that (a stop
never fires before the first word). Greedy answers equal `model.generate`'s under that rule
(tested on every tiny family). On CUDA, batch_size="auto" starts large and
halves on out-of-memory errors, retrying the batch.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

Prompt = str | list  # a plain string, or chat messages [{"role": ..., "content": ...}]


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; everything here except batch_size can change an answer. Greedy unless
    temperature > 0 (sampling from the seeded torch generator: reproducible for the same
    batch size). batch_size may be "auto" (see `AUTO_BATCH`)."""

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    batch_size: int | str = 16
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
    """The answer in generated text: without its leading whitespace, up to (not including) the
    earliest stop string after it. A model that answers on the next line ("\nParis\nQ:") is
    not cut to "" by a stop string "\n" before its first word."""
    text = text.lstrip()
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


# ---- batches: length buckets, batch_size="auto", halving on out-of-memory ----

AUTO_BATCH = {"cuda": 512}  # first batch size tried by batch_size="auto" (halved on OOM)
AUTO_BATCH_OTHER = 64       # elsewhere (a CPU process cannot catch running out of memory)
PAD_TOLERANCE = 0.1   # a length bucket may pad this share of its real tokens, or ...
PAD_ALLOWANCE = 64    # ... this many tokens: about what one more forward costs (it reads every weight)
PREFILL_TOKENS = 4096  # prompt tokens prefilled together ahead of the rows they will replace


def batch_limit(batch_size: int | str, device, n: int) -> int:
    """The rows per batch to start with: batch_size, or for "auto" AUTO_BATCH (capped at n)."""
    if batch_size == "auto":
        return max(1, min(n, AUTO_BATCH.get(torch.device(device).type, AUTO_BATCH_OTHER)))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return batch_size


def length_buckets(lengths: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive positions of `lengths` (sorted longest first) in buckets of at most `limit`,
    each padded to its first (longest) entry with at most PAD_TOLERANCE of its real tokens or
    PAD_ALLOWANCE tokens of padding."""
    out, start = [], 0
    while start < len(lengths):
        end, real = start + 1, lengths[start]
        while end < len(lengths) and end - start < limit:
            waste = (end + 1 - start) * lengths[start] - real - lengths[end]
            if waste > max(PAD_ALLOWANCE, PAD_TOLERANCE * (real + lengths[end])):
                break
            real += lengths[end]
            end += 1
        out.append(list(range(start, end)))
        start = end
    return out


def _out_of_memory() -> type[BaseException]:
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def halving(batches: Iterator[list], run: Callable[[list], object], device
            ) -> Iterator[tuple[list, object]]:
    """(batch, run(batch)) for each batch; a batch that runs out of (accelerator) memory is
    split in halves and retried, and later batches are cut to the size that fitted."""
    cap = None
    for batch in batches:
        todo = [batch]
        while todo:
            b = todo.pop(0)
            if cap is not None and len(b) > cap:
                todo[:0] = [b[k:k + cap] for k in range(0, len(b), cap)]
                continue
            try:
                out, failed = run(b), False
            except _out_of_memory():
                if len(b) == 1:
                    raise
                out, failed = None, True
            if failed:  # outside the except block, so the failed batch's tensors are freed
                cap = len(b) // 2
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()
                todo.insert(0, b)
                continue
            yield b, out


# ---- the KV cache ----

class _RoomyLayer(DynamicLayer):
    """DynamicLayer that appends into spare room instead of concatenating: the stock layer
    copies the whole cache at every decoding step. keys/values are views of the room (when
    something else sets them, the next update moves them into new room)."""

    _room = None

    def _owned_room(self):
        room, n = self._room, self.get_seq_length()
        if room is None or not n or self.keys.data_ptr() != room[0].data_ptr() \
                or self.keys.shape[0] != room[0].shape[0]:
            return None
        return room

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, t = self.get_seq_length(), key_states.shape[-2]
        room = self._owned_room()
        if room is None or n + t > room[0].shape[-2]:
            size = n + t + max(64, (n + t) // 2)
            room = tuple(s.new_empty((*s.shape[:2], size, s.shape[-1]))
                         for s in (key_states, value_states))
            if n:
                room[0][:, :, :n], room[1][:, :, :n] = self.keys, self.values
        room[0][:, :, n:n + t], room[1][:, :, n:n + t] = key_states, value_states
        self._room = room
        self.keys, self.values = room[0][:, :, :n + t], room[1][:, :, :n + t]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        room, n = self._owned_room(), self.get_seq_length()
        if room is None:
            self._room = None
            return super().batch_select_indices(indices)
        self._room = tuple(r[indices] for r in room)
        self.keys, self.values = self._room[0][:, :, :n], self._room[1][:, :, :n]


def _roomy(cache):
    """The cache with its full-attention layers appending in place (sliding layers stay)."""
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = _RoomyLayer
    if getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = _RoomyLayer
    return cache


def _new_cache(model, shared, rows: int):
    """A cache for `rows` rows: the shared prefix's cache repeated, or an empty one."""
    if shared is None:
        return _roomy(DynamicCache(config=model.config))
    cache = copy.deepcopy(shared)
    cache.batch_repeat_interleave(rows)
    return _roomy(cache)


def _insert_pad(t: torch.Tensor, at: int, width: int, dim: int) -> torch.Tensor:
    """t widened to `width` along dim by zeros inserted at position `at`."""
    gap = width - t.shape[dim]
    if gap <= 0:
        return t
    zeros = t.new_zeros((*t.shape[:dim], gap, *t.shape[dim + 1:]))
    return torch.cat([t.narrow(dim, 0, at), zeros, t.narrow(dim, at, t.shape[dim] - at)], dim)


def _merge(parts: list[tuple[object, torch.Tensor]], n: int):
    """One batch from (cache, attention mask) parts whose rows share the first n slots (the
    shared prefix; 0 without one): each part is padded after them to the widest part."""
    if len(parts) == 1:
        return parts[0]
    width = max(m.shape[1] for _, m in parts)
    cache = parts[0][0]
    for i, layer in enumerate(cache.layers):
        if getattr(layer, "keys", None) is None:
            continue  # a layer that holds no KV (shared-KV or attention-free layers)
        for name in ("keys", "values"):
            ts = [getattr(p.layers[i], name) for p, _ in parts]
            w = max(t.shape[2] for t in ts)  # a sliding layer keeps at most its window
            setattr(layer, name, torch.cat([_insert_pad(t, n, w, 2) for t in ts]))
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = width
    return cache, torch.cat([_insert_pad(m, n, width, 1) for _, m in parts])


def _widen(cache, mask: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """The batch widened to `width` slots by padding inserted after the first n."""
    gap = width - mask.shape[1]
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None or gap <= 0:
            continue
        w = layer.keys.shape[2] + gap
        if hasattr(layer, "cumulative_length"):  # a sliding layer keeps at most its window
            w = min(w, max(layer.keys.shape[2], layer.sliding_window - 1))
            layer.cumulative_length += gap
        layer.keys, layer.values = (_insert_pad(t, n, w, 2) for t in (layer.keys, layer.values))
    return _insert_pad(mask, n, width, 1)


def _place(cache, mask: torch.Tensor, slots: list[int], part, p_mask: torch.Tensor, n: int):
    """New rows (their prefilled cache `part` and mask) written over the finished rows
    `slots` of the batch, right-aligned (what is left of them is masked): no copy of the rest
    of the cache. The first n slots (the shared prefix) are the same in every row."""
    if p_mask.shape[1] > mask.shape[1]:
        mask = _widen(cache, mask, n, p_mask.shape[1])
    sel = torch.tensor(slots, dtype=torch.long, device=mask.device)
    for layer, new in zip(cache.layers, part.layers):
        if getattr(layer, "keys", None) is None:
            continue
        for name in ("keys", "values"):
            dst, src = getattr(layer, name), getattr(new, name)
            m = min(src.shape[2], dst.shape[2]) - n  # a sliding layer holds its window only
            dst[sel, :, dst.shape[2] - m:] = src[:, :, src.shape[2] - m:]
    mask[sel] = _insert_pad(p_mask, n, mask.shape[1], 1)
    return mask


def _trim(cache, mask: torch.Tensor, n: int):
    """Drop the slots after the first n that are padding for every row (rows that left held
    them), once they are a quarter of the width: a batch that keeps taking new rows would
    otherwise widen by one slot a step for good. The rows are left-padded after the first n
    slots, so those slots are one run and a sliding window (n = 0) still sees the same tokens."""
    pad = (mask[:, n:] == 0).all(0).long()
    k = int(pad.cumprod(0).sum())
    if 4 * k < mask.shape[1]:
        return mask
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None:
            continue
        if hasattr(layer, "cumulative_length"):  # keeps the last slots only (n is 0)
            layer.cumulative_length -= k
            keep = min(layer.keys.shape[2], layer.cumulative_length)
            layer.keys, layer.values = layer.keys[:, :, -keep:], layer.values[:, :, -keep:]
        else:
            layer.keys, layer.values = (torch.cat([t[:, :, :n], t[:, :, n + k:]], 2)
                                        for t in (layer.keys, layer.values))
    return torch.cat([mask[:, :n], mask[:, n + k:]], 1)


# ---- generation ----

class _Stops:
    """Stop strings checked on the decoded tail of each row: a window of tokens long enough to
    hold any stop string (a character is at most 4 bytes, each at least a token's worth), then
    confirmed on the row's whole text. A stop counts only after the text's leading whitespace
    (`cut_at_stop`); a row no longer than the window is its own tail, so its leading newline
    is stripped there and does not cost a whole-row decode at every step."""

    def __init__(self, tokenizer, stop: Sequence[str]):
        self.tok, self.stop = tokenizer, tuple(s for s in stop if s)
        self.window = 4 * max((len(s) for s in self.stop), default=0) + 4
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.decode_batch = (
            (lambda seqs: backend.decode_batch(seqs, skip_special_tokens=True)) if backend is not None
            else (lambda seqs: [tokenizer.decode(s, skip_special_tokens=True) for s in seqs]))

    def hits(self, rows: list[list[int]]) -> list[bool]:
        if not self.stop or not rows:
            return [False] * len(rows)
        tails = self.decode_batch([r[-self.window:] for r in rows])
        tails = [t.lstrip() if len(r) <= self.window else t for r, t in zip(rows, tails)]
        return [any(s in t for s in self.stop) and self._confirm(r) for r, t in zip(rows, tails)]

    def _confirm(self, row: list[int]) -> bool:
        text = self.tok.decode(row, skip_special_tokens=True).lstrip()
        return any(s in text for s in self.stop)


def _eos_ids(model, tokenizer) -> set[int]:
    """The token ids that end a generation: the model's generation config, as generate uses."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}


def _pick(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float()
    if temperature > 0:
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1)[:, 0]
    return logits.argmax(-1)


@dataclass
class _Rows:
    """Rows being generated: their KV cache, attention mask, next positions, the token each
    feeds next, its prompt index, and whether it has finished."""

    cache: object
    mask: torch.Tensor
    pos: torch.Tensor
    tok: torch.Tensor
    rows: list[int]
    done: list[bool]

    def select(self, keep: list[int]) -> None:
        sel = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        self.mask, self.pos, self.tok = self.mask[sel], self.pos[sel], self.tok[sel]
        self.rows, self.done = [self.rows[j] for j in keep], [self.done[j] for j in keep]

    def split(self, m: int) -> "_Rows":
        """The first m rows, taken off these (views: prefilled rows are only read)."""
        cache = copy.copy(self.cache)
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        for head, rest in zip(cache.layers, self.cache.layers):
            if getattr(rest, "keys", None) is not None:
                head.keys, head.values = rest.keys[:m], rest.values[:m]
                rest.keys, rest.values = rest.keys[m:], rest.values[m:]
        head = _Rows(cache, self.mask[:m], self.pos[:m], self.tok[:m], self.rows[:m], self.done[:m])
        self.mask, self.pos, self.tok = self.mask[m:], self.pos[m:], self.tok[m:]
        self.rows, self.done = self.rows[m:], self.done[m:]
        return head


def _stream(model, prompts: list[list[int]], shared, n: int, config: GenerationConfig,
            stops: _Stops, eos: set[int], pad_id: int, device, limit: int,
            max_new: Sequence[int] | None = None) -> Iterator[tuple[int, list[int]]]:
    """Continuous batching over `prompts` (suffixes after the n shared tokens, longest
    first): up to `limit` rows decode together, one token per row per step. Prompts are
    prefilled ahead, about PREFILL_TOKENS at a time in length buckets; a row that finishes
    (EOS, a stop string, max_new_tokens) stops being read and a prefilled row takes its place
    in the KV cache. With no prompts left, finished rows leave once they are a quarter of the
    batch (compacting copies the cache). Yields (prompt index, generated tokens) as rows
    finish."""
    queue, out = list(range(len(prompts))), {}
    ready: list[_Rows] = []  # prefilled rows waiting for a place
    batch: _Rows | None = None

    def record(part: _Rows) -> list[int]:
        """Append each unfinished row's token; the prompts that finish now."""
        live = [j for j, f in enumerate(part.done) if not f]
        picked = part.tok.tolist()
        for j in live:
            out[part.rows[j]].append(picked[j])
        hit = stops.hits([out[part.rows[j]] for j in live])
        ended = []
        for j, h in zip(live, hit):
            seq = out[part.rows[j]]
            if h or seq[-1] in eos or len(seq) == (max_new[part.rows[j]] if max_new
                                                   else config.max_new_tokens):
                part.done[j] = True
                ended.append(part.rows[j])
        return ended

    def prefill(k: int) -> Iterator[tuple[int, list[int]]]:
        """Prefill at least k waiting prompts (more, up to PREFILL_TOKENS tokens) into `ready`."""
        take, tokens = [], 0
        while queue and (len(take) < k or tokens + len(prompts[queue[0]]) <= PREFILL_TOKENS):
            tokens += len(prompts[queue[0]])
            take.append(queue.pop(0))
        for bucket in length_buckets([len(prompts[r]) for r in take], limit):
            rows = [take[b] for b in bucket]
            ids, mask = _left_pad([prompts[r] for r in rows], pad_id, device)
            mask = torch.cat([mask.new_ones((len(rows), n)), mask], 1)
            pos = _positions(mask)[:, n:]
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                        cache=_new_cache(model, shared, len(rows)), use_cache=True, logits_to_keep=1)
            part = _Rows(res.cache, mask, pos[:, -1:] + 1,
                         _pick(res.logits[:, -1], config.temperature), rows, [False] * len(rows))
            for r in rows:
                out[r] = []
            for r in record(part):
                yield r, out.pop(r)
            if not all(part.done):
                part.select([j for j, d in enumerate(part.done) if not d])
                ready.append(part)

    def waiting() -> int:
        return sum(len(p.rows) for p in ready)

    def take_ready(m: int) -> list[_Rows]:
        parts = []
        while m and ready:
            parts.append(ready[0].split(m) if len(ready[0].rows) > m else ready.pop(0))
            m -= len(parts[-1].rows)
        return parts

    with torch.inference_mode():
        while True:
            slots = [j for j, d in enumerate(batch.done) if d] if batch else []
            want = len(slots) if batch else limit
            if want and waiting() < want and queue:
                yield from prefill(want - waiting())
            if batch is None and ready:  # the first rows, merged into one batch
                parts = take_ready(limit)
                cache, mask = _merge([(p.cache, p.mask) for p in parts], n)
                batch = _Rows(cache, mask, torch.cat([p.pos for p in parts]),
                              torch.cat([p.tok for p in parts]), sum((p.rows for p in parts), []),
                              sum((p.done for p in parts), []))
            elif slots and ready:  # prefilled rows take the places of finished ones
                for part in take_ready(len(slots)):
                    at, slots = slots[:len(part.rows)], slots[len(part.rows):]
                    batch.mask = _place(batch.cache, batch.mask, at, part.cache, part.mask, n)
                    sel = torch.tensor(at, dtype=torch.long, device=device)
                    batch.pos[sel], batch.tok[sel] = part.pos, part.tok
                    for j, r in zip(at, part.rows):
                        batch.rows[j], batch.done[j] = r, False
                batch.mask = _trim(batch.cache, batch.mask, n)
            elif slots and not queue and 4 * len(slots) >= len(batch.rows):  # finished rows leave
                if len(slots) == len(batch.rows):
                    batch = None
                else:
                    batch.select([j for j, d in enumerate(batch.done) if not d])
                    batch.mask = _trim(batch.cache, batch.mask, n)
            if batch is None or all(batch.done):
                if not queue and not ready:
                    return
                continue
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], 1)
            logits = model(input_ids=batch.tok[:, None], attention_mask=batch.mask,
                           position_ids=batch.pos, cache=batch.cache, use_cache=True).logits[:, -1]
            batch.pos = batch.pos + 1
            batch.tok = _pick(logits, config.temperature)
            for r in record(batch):
                yield r, out.pop(r)


def iter_generate(model, tokenizer, prompts: Sequence[Prompt], config: GenerationConfig,
                  progress: bool = True, desc: str = "generate",
                  max_new: Sequence[int] | None = None) -> Iterator[list[tuple[int, Generation]]]:
    """Yield [(input index, Generation)] in groups of batch_size, as rows finish (prompts are
    taken longest first). An out-of-memory error halves the batch size and restarts the
    prompts that have not finished (what was yielded stays). max_new: a max_new_tokens per
    prompt (input order, each >= 1) in place of config.max_new_tokens."""
    encoded = encode(tokenizer, prompts)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    # A few-shot preamble shared by every prompt is encoded once for the whole request set
    # (not per batch, so results cannot depend on batching); each bucket gets a copy of its
    # KV cache and its suffixes are left-padded after it.
    n = shared_prefix_len(encoded) if prefix_sharing_safe(model) else 0
    shared = prefix_cache(model, encoded[0][:n], device) if n else None
    stops, eos = _Stops(tokenizer, config.stop), _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    limit = batch_limit(config.batch_size, device, len(order))
    bar = tqdm(total=len(order), desc=desc, disable=not progress, unit="prompt")
    ready: list[tuple[int, Generation]] = []
    finished: set[int] = set()  # prompts done (yielded or ready)
    while order:
        try:
            for r, toks in _stream(model, [encoded[i][n:] for i in order], shared, n, config,
                                   stops, eos, pad_id, device, limit,
                                   [max_new[i] for i in order] if max_new else None):
                toks = [t for t in toks if t != pad_id]
                text = tokenizer.decode(toks, skip_special_tokens=True)
                ready.append((order[r], Generation(cut_at_stop(text, config.stop), len(toks))))
                finished.add(order[r])
                if len(ready) >= limit:
                    bar.update(len(ready))
                    yield ready
                    ready = []
            failed = False
        except _out_of_memory():
            if limit == 1:
                raise
            failed = True
        if not failed:
            break
        order = [i for i in order if i not in finished]  # the rest start again, half as many rows
        limit //= 2
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if ready:
        bar.update(len(ready))
        yield ready
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


# ---- perplexity windows ----

NLL_CHUNK = 256  # positions per log-softmax: fp32 log-probs of a whole batch would be B x T x V


def iter_window_nll(model, windows: Sequence[Sequence[int]], batch_size: int | str = 8,
                    progress: bool = True, desc: str = "perplexity",
                    skips: Sequence[int] | None = None) -> Iterator[list[tuple[int, float, int]]]:
    """Yield [(window index, summed NLL, scored tokens)] per batch; every token but each
    window's first is scored against the window's own prefix, except the first skips[i]
    targets of window i (sliding windows score only their new tokens)."""
    device = next(model.parameters()).device
    limit = batch_limit(batch_size, device, len(windows))
    batches = (list(range(k, min(k + limit, len(windows)))) for k in range(0, len(windows), limit))

    def run(idx):
        width = max(len(windows[i]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        scored = torch.zeros((len(idx), width - 1), dtype=torch.bool)
        for row, i in enumerate(idx):  # right padding: positions start at 0 for every window
            ids[row, :len(windows[i])] = torch.tensor(windows[i])
            mask[row, :len(windows[i])] = 1
            scored[row, (skips[i] if skips else 0):len(windows[i]) - 1] = True
        ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            nll = torch.zeros(len(idx), dtype=torch.float64, device=device)
            for s in range(0, width - 1, NLL_CHUNK):
                e = min(s + NLL_CHUNK, width - 1)
                part = torch.nn.functional.cross_entropy(
                    logits[:, s:e].float().transpose(1, 2), ids[:, s + 1:e + 1], reduction="none")
                nll += torch.where(scored[:, s:e], part, 0.0).sum(1, dtype=torch.float64)
        return [(i, nll[row].item(), int(scored[row].sum())) for row, i in enumerate(idx)]

    bar = tqdm(total=len(windows), desc=desc, disable=not progress, unit="window")
    for idx, rows in halving(batches, run, device):
        bar.update(len(idx))
        yield rows
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


def iter_loglikelihood(model, tokenizer, requests: Sequence[Choice], batch_size: int | str = 16,
                       reuse_prefix: bool = True, progress: bool = True,
                       desc: str = "loglikelihood") -> Iterator[list[tuple[int, ChoiceResult]]]:
    """Yield [(request index, ChoiceResult)] per batch.

    Each context runs once (left-padded, explicit positions) and only its last position's
    logits are computed: every single-token continuation is scored from that pass. Requests
    are grouped by their opening tokens; a group's common prefix (a subject's k-shot preamble)
    is encoded once for all its batches and its KV cache shared (reuse_prefix), and batches are
    length buckets (little padding). Longer continuations then continue from each context's KV
    cache (reuse_prefix) or, for comparison, run as whole context + continuation rows."""
    encoded = [encode_choice(tokenizer, r) for r in requests]
    ctxs = [e[0] for e in encoded]
    order = sorted(range(len(encoded)), key=lambda i: (ctxs[i][:PREFIX_KEY], -len(ctxs[i])))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id or 0
    limit = batch_limit(batch_size, device, len(order))
    safe = reuse_prefix and prefix_sharing_safe(model)
    group_of = {i: run for run in _runs(order, ctxs) for i in run}
    held: dict = {}  # the last prefix encoded: its requests, length and KV cache

    def prefix_for(idx):
        """The common prefix of idx's run (a k-shot preamble), encoded once for all its batches."""
        members = group_of[idx[0]]
        if held.get("members") is not members:
            n = shared_prefix_len([ctxs[i] for i in members]) if safe else 0
            held.update(members=members, n=n,
                        cache=prefix_cache(model, ctxs[members[0]][:n], device) if n else None)
        return held["n"], held["cache"]

    def run(idx):
        conts = [encoded[i][1] for i in idx]
        long = any(len(c) > 1 for cs in conts for c in cs)
        n, shared = prefix_for(idx)
        last, cache, mask = _score_contexts(model, [ctxs[i] for i in idx], pad_id, device,
                                            n, shared, keep_cache=long and reuse_prefix)
        heads = [[c[0] for c in cs] for cs in conts]  # every continuation's first token
        width = max(map(len, heads))
        index = torch.tensor([h + h[:1] * (width - len(h)) for h in heads], device=last.device)
        best = last.argmax(-1)
        picked, hit = last.gather(1, index).tolist(), (index == best[:, None]).tolist()
        first = [list(zip(picked[r][:len(h)], hit[r][:len(h)])) for r, h in enumerate(heads)]
        best = best.tolist()
        rest = {}
        if long:
            rest = (_continue_from_cache(model, cache, mask, conts, device)
                    if reuse_prefix else _concatenated(model, [ctxs[i] for i in idx], conts, device))
        results = []
        for r, i in enumerate(idx):
            lp, greedy = [], []
            for k, c in enumerate(conts[r]):
                l0, g0 = first[r][k]
                l1, g1 = rest.get((r, k), (0.0, True))
                lp.append(l0 + l1)
                greedy.append(g0 and g1)
            results.append((i, ChoiceResult(tuple(lp), tuple(len(c) for c in conts[r]),
                                            tuple(greedy), tokenizer.decode([best[r]]))))
        return results

    bar = tqdm(total=len(order), desc=desc, disable=not progress, unit="request")
    for idx, results in halving(_batches(order, ctxs, limit), run, device):
        bar.update(len(idx))
        yield results
    bar.close()


def _runs(order: list[int], ctxs: list[list[int]]) -> list[list[int]]:
    """Runs of `order` whose first PREFIX_KEY tokens agree (one subject's k-shot preamble),
    then a pool of all the others, longest first."""
    runs, pool = [], []
    for _, run in itertools.groupby(order, key=lambda i: tuple(ctxs[i][:PREFIX_KEY])):
        run = list(run)
        if len(run) == 1:
            pool += run
        else:
            runs.append(run)
    pool.sort(key=lambda i: -len(ctxs[i]))
    return runs + ([pool] if pool else [])


def _batches(order: list[int], ctxs: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Length buckets of up to batch_size within each of `_runs`: requests whose first
    PREFIX_KEY tokens agree (`order` sorts them together, longest first) are batched only with
    each other, so their preamble is encoded once; the rest are pooled, longest first."""
    for run in _runs(order, ctxs):
        yield from _bucketed(run, ctxs, batch_size)


def _bucketed(run: list[int], ctxs: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Length buckets of a run sorted longest first, by the lengths after its common prefix."""
    n = shared_prefix_len([ctxs[i] for i in run])
    for bucket in length_buckets([len(ctxs[i]) - n for i in run], batch_size):
        yield [run[k] for k in bucket]


def _score_contexts(model, ctxs, pad_id, device, n: int, shared, keep_cache: bool):
    """Last-position log-probs of each context ([B, vocab]), its KV cache (if kept) and the
    attention mask the cache goes with. The first n tokens, common to all, are in `shared`
    (the KV cache of a prefix encoded once) unless n is 0."""
    cache = _new_cache(model, shared, len(ctxs)) if n else None
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


def loglikelihood(model, tokenizer, requests: Sequence[Choice], batch_size: int | str = 16,
                  reuse_prefix: bool = True, progress: bool = True) -> list[ChoiceResult]:
    """ChoiceResults for all requests, in input order."""
    out: list[ChoiceResult | None] = [None] * len(requests)
    for batch in iter_loglikelihood(model, tokenizer, requests, batch_size, reuse_prefix, progress):
        for i, res in batch:
            out[i] = res
    return out

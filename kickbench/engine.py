"""Every forward pass of evaluation: batched, length-sorted greedy generation with stop strings."""

from __future__ import annotations

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
    # Stop strings are checked on decoded text, so a stop that spans tokens still stops.
    stop_kwargs = {"stop_strings": list(config.stop), "tokenizer": tokenizer} if config.stop else {}
    bar = tqdm(total=len(order), desc=desc, disable=not progress, unit="prompt")
    for start in range(0, len(order), config.batch_size):
        idx = order[start:start + config.batch_size]
        ids, mask = _left_pad([encoded[i] for i in idx], tokenizer.pad_token_id, device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
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


def generate(model, tokenizer, prompts: Sequence[Prompt], config: GenerationConfig,
             progress: bool = True) -> list[Generation]:
    """Greedy generations for all prompts, returned in input order."""
    out: list[Generation | None] = [None] * len(prompts)
    for batch in iter_generate(model, tokenizer, prompts, config, progress):
        for i, g in batch:
            out[i] = g
    return out

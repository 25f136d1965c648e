"""Probability-weighted scores from a local judge (as G-Eval, Liu et al. 2023): the reply's
format is forced and each score is the judge's expected value over 1-10, read from its
next-token probabilities, so every judgment is readable. A small model that cannot write the
format can still rank answers; whether it ranks them well is for its order disagreement and
its agreement with references to show."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..engine import encode, prefix_cache, shared_prefix_len

DIGITS = "123456789"


@dataclass(frozen=True)
class Layout:
    """The score sheet a reply holds: `lines` lines of `per_line` scores separated by spaces."""

    lines: int
    per_line: int


def expected_score(p_digits: torch.Tensor, p_zero_after_one: float) -> tuple[float, int]:
    """Expected score and most likely score on 1-10, from the probabilities of the first digit
    (1-9, unnormalised) and of "0" following a "1" (which makes it 10)."""
    p = p_digits.double() / p_digits.double().sum()
    probs = torch.cat([p[:1] * (1 - p_zero_after_one), p[1:], p[:1] * p_zero_after_one])
    scores = torch.arange(1, 11, dtype=torch.float64)
    return float(probs @ scores), int(probs.argmax()) + 1


def sheet_text(sheet: list[list[tuple[float, int]]]) -> str:
    """Score lines that rubric.parse reads (the expected values), then the greedy path."""
    def fmt(x: float) -> str:
        return "10" if x >= 9.995 else f"{x:.2f}"

    lines = [" ".join(fmt(e) for e, _ in row) for row in sheet]
    greedy = ", ".join(" ".join(str(g) for _, g in row) for row in sheet)
    return "\n".join(lines) + f"\n[expected scores over 1-10 from token probabilities; most likely: {greedy}]"


def single_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"expected scoring needs {text!r} as one token in the judge's tokenizer "
                         f"(it is {len(ids)}); use --judge-scoring generate")
    return ids[0]


class SheetReader:
    """Reads score sheets from a causal LM, one prompt at a time with a KV cache; prompts that
    share a long prefix with the next one (the two orders of a pairwise judgment) encode it once."""

    def __init__(self, model, tokenizer, first_separator: str = ""):
        self.model, self.tok, self.first = model, tokenizer, first_separator
        self.digits = [single_token(tokenizer, d) for d in DIGITS]
        self.zero = single_token(tokenizer, "0")
        self.sep = {s: tokenizer.encode(s, add_special_tokens=False) for s in (first_separator, " ", "\n")}
        self.device = next(model.parameters()).device

    def read(self, prompts: list, layout: Layout) -> list[list[list[tuple[float, int]]]]:
        encoded = encode(self.tok, prompts)
        held_ids, held = [], None
        sheets = []
        for i, ids in enumerate(encoded):
            if held is None or ids[:len(held_ids)] != held_ids:
                n = shared_prefix_len([ids, encoded[i + 1]]) if i + 1 < len(encoded) else 0
                held_ids = ids[:n]
                held = prefix_cache(self.model, held_ids, self.device) if n else None
            cache = copy.deepcopy(held) if held is not None else None
            sheets.append(self._sheet(ids[len(held_ids):], cache, layout))
        return sheets

    def _feed(self, ids: list[int], cache):
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.device), cache=cache,
                             use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float().softmax(-1), out.cache

    def _sheet(self, rest: list[int], cache, layout: Layout) -> list[list[tuple[float, int]]]:
        probs, cache = self._feed(rest + self.sep[self.first], cache)
        sheet = []
        for line in range(layout.lines):
            row = []
            for k in range(layout.per_line):
                peek, _ = self._feed([self.digits[0]], copy.deepcopy(cache))
                score, best = expected_score(probs[self.digits], float(peek[self.zero]))
                row.append((score, best))
                last = line == layout.lines - 1 and k == layout.per_line - 1
                if not last:
                    chosen = [self.digits[0], self.zero] if best == 10 else [self.digits[best - 1]]
                    probs, cache = self._feed(chosen + self.sep[" " if k + 1 < layout.per_line else "\n"], cache)
            sheet.append(row)
        return sheet

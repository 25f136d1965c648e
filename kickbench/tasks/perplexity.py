"""Perplexity on raw text: token-weighted mean NLL (exp of it) over windows of the joined text.

Windows are non-overlapping by default (the GPTQ/SparseGPT/Wanda evaluation); with a stride
shorter than the window they slide, and each window scores only its last `stride` tokens
(the first window scores all of its own), so every token is scored once with more context.

Local data: WikiText-2 raw (`wiki.test.raw`, or its `test.jsonl` rows with `text`, joined
with "\\n\\n" as in the GPTQ/SparseGPT/Wanda code), any .txt file, or JSONL with `text`.
Hub data: `wikitext:wikitext-2-raw-v1@test` style ids (rows with `text`).
"""

from __future__ import annotations

from pathlib import Path

from . import data, metrics

NAME = "perplexity"
VERSION = 1  # bump when a change can alter this task's numbers (kickbench/versions.py)
KIND = "rolling"
DEFAULT_DATA = data.PROJECT_DATA / "heldout_text.jsonl"
MAX_WINDOW = 2048  # default window: the model's context, up to this (the reference methods)
TEMPLATES = {"raw": "{text}"}
DEFAULT_TEMPLATE = "raw"
SCORINGS = {"perplexity": "perplexity"}
HEADLINE = "perplexity"
METRICS = (metrics.Metric("perplexity", "perplexity", higher_is_better=False, aggregate="ppl"),)


def default_window(model_config) -> int:
    """The model's context length, capped at MAX_WINDOW."""
    ctx = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    return min(ctx or MAX_WINDOW, MAX_WINDOW)


def load_text(source: str | Path | None = None) -> str:
    rows = data.read_rows(source or DEFAULT_DATA, "perplexity text")
    return "\n\n".join(r["text"] for r in rows)


def load(source: str | Path | None = None) -> list[dict]:
    """One item holding the whole text (windows depend on the tokenizer, see windows())."""
    return [{"id": "text", "text": load_text(source)}]


def windows(tokenizer, items: list[dict], window: int, stride: int | None = None) -> list[dict]:
    """Windows {ids, skip}: score every target after the first `skip` ones (see module doc).

    A BOS token starts each window when the tokenizer adds one by default (Gemma needs it)."""
    stride = stride or window
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    ids = tokenizer(items[0]["text"], add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    span = window - 1 if adds_bos else window  # text tokens per window
    step = min(stride, span)
    out, start = [], 0
    while start + span <= len(ids):
        ids_w = ([bos] if adds_bos else []) + ids[start:start + span]
        # later windows score only their `step` new tokens (all of them when not sliding)
        out.append({"ids": ids_w, "skip": max(0, len(ids_w) - 1 - step) if start else 0})
        start += step
    return out

"""Perplexity on raw text: non-overlapping windows, token-weighted mean NLL (exp of it).

Local data: WikiText-2 raw (`wiki.test.raw`, or its `test.jsonl` rows with `text`, joined
with "\\n\\n" as in the GPTQ/SparseGPT/Wanda code), any .txt file, or JSONL with `text`.
Hub data: `wikitext:wikitext-2-raw-v1@test` style ids (rows with `text`).
"""

from __future__ import annotations

from pathlib import Path

from . import data

NAME = "perplexity"
VERSION = 1
KIND = "rolling"
DEFAULT_DATA = data.PROJECT_DATA / "heldout_text.jsonl"
WINDOW = 512  # tokens per window; CPU-sized (the reference methods use 2048 on GPUs)
TEMPLATES = {"raw": "{text}"}
DEFAULT_TEMPLATE = "raw"
SCORINGS = {"perplexity": "perplexity"}


def load_text(source: str | Path | None = None) -> str:
    rows = data.read_rows(source or DEFAULT_DATA, "perplexity text")
    return "\n\n".join(r["text"] for r in rows)


def load(source: str | Path | None = None) -> list[dict]:
    """One item holding the whole text (windows depend on the tokenizer, see windows())."""
    return [{"id": "text", "text": load_text(source)}]


def windows(tokenizer, items: list[dict], window: int = WINDOW) -> list[list[int]]:
    """Non-overlapping windows of the joined text; a BOS token starts each window when the
    tokenizer adds one by default (Gemma needs it)."""
    ids = tokenizer(items[0]["text"], add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    step = window - 1 if adds_bos else window
    return [([bos] if adds_bos else []) + ids[i:i + step]
            for i in range(0, len(ids) - step + 1, step)]

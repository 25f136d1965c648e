"""In-context summarization (LLM-KICK's IC-Sum): summarize a news story in under 150 words.

Scored against the reference summary by ROUGE-1/2/L (no judge needed) and, with a judge, on
coherence, consistency, fluency and relevance (1-10) in a pairwise comparison with the
reference, both orders. Prompts are built from the article only: LLM-KICK's verbatim prompts
contain the reference highlights.

Local data: JSONL with `document` and `summary` (../shared/data/cnn_dailymail_llmkick/
stories.jsonl, ../shared/data/xsum/test_1000.jsonl); `highlights` is read as the summary.
Length buckets: LLM-KICK's own (`llmkick_categories`; a story in two buckets is an item of
each), else by words: small <= 470 < mid < 790 <= large. Hub: `cnn_dailymail:3.0.0@test`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..engine import GenerationConfig, Prompt
from ..judge import Request, reference
from ..judge.rubric import SUMMARY
from . import data, metrics, text

NAME = "icsum"
VERSION = 1  # bump when a change can alter this task's numbers (kickbench/versions.py)
KIND = "generate"
DEFAULT_DATA = data.PROJECT_DATA / "icsum.jsonl"
GENERATION = GenerationConfig(max_new_tokens=200, stop=())
WORD_LIMIT = 150
BUCKETS = ("small", "mid", "large")
RUBRIC = SUMMARY

INSTRUCTION = f"Summarize the following news story in under {WORD_LIMIT} words."
TEMPLATES = {
    "chat": INSTRUCTION + "\n\n{document}",  # through the model's chat template
    "plain": "{document}\n\n" + INSTRUCTION.replace("the following", "the above") + "\n\nSummary:",
}
DEFAULT_TEMPLATE = "chat"
SCORINGS = {"rouge": "rougeL", "rouge1": "rouge1", "rouge2": "rouge2",
            "length": "within_limit", "words": "words", "repetition": "unique_token_ratio"}
HEADLINE = "rougeL"
METRICS = (metrics.Metric("rougeL", "ROUGE-L F1"), metrics.Metric("rouge1", "ROUGE-1 F1"),
           metrics.Metric("rouge2", "ROUGE-2 F1"),
           metrics.accuracy("within_limit", "within word limit"),
           metrics.Metric("words", "words", higher_is_better=False),
           metrics.Metric("unique_token_ratio", "unique-token ratio"),
           *metrics.JUDGE, *metrics.aspects(RUBRIC))


def bucket(words: int) -> str:
    return "small" if words <= 470 else "mid" if words < 790 else "large"


def load(source: str | Path | None = None) -> list[dict]:
    """Items as {id, document, reference, bucket, words}, buckets interleaved (so a --limit
    covers every length)."""
    source = str(source or DEFAULT_DATA)
    items = [it for i, r in enumerate(data.read_rows(source, "summarization data file"))
             for it in adapt(r, i)]
    data.require_fields(items, ("document", "reference"), source)
    groups = [[it for it in items if it["bucket"] == b] for b in BUCKETS]
    return [it for row in itertools.zip_longest(*groups) for it in row if it]


def adapt(row: dict, index: int) -> list[dict]:
    document = (row.get("document") or row.get("article") or "").strip()
    summary = row.get("summary") or row.get("highlights") or ""
    words = row.get("document_words") or len(document.split())
    base = {"id": str(row.get("id", index)), "document": document, "reference": summary.strip(),
            "words": words}
    cats = row.get("llmkick_categories")
    if cats:
        return [{**base, "id": f"{base['id']}/{c}", "bucket": c} for c in cats]
    return [{**base, "bucket": bucket(words)}]


def prompt(item: dict, template: str = DEFAULT_TEMPLATE) -> Prompt:
    body = TEMPLATES[template].format(document=item["document"])
    return [{"role": "user", "content": body}] if template == "chat" else body


def score(item: dict, prompt_text: str, output: str) -> dict[str, float]:
    words = len(output.split())
    return {**reference.rouge(output, item["reference"]),
            "within_limit": float(0 < words < WORD_LIMIT), "words": float(words),
            "unique_token_ratio": text.unique_token_ratio(output)}


def judge_request(item: dict, output: str, history: list[str]) -> Request:
    """The judge compares the summary with the reference, the story in view."""
    return Request(item["document"], output.strip(), item["reference"])

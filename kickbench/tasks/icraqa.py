"""In-context retrieval QA (LLM-KICK's ICR-QA): answer from a passage (open book) or from
memory (closed book); the two templates side by side show how much of a compressed model's
loss is retrieval from context versus recall from its weights.

Scoring: the answer's first line, SQuAD normalisation, exact match and token F1, max over
aliases; an empty answer is wrong. `legacy` reproduces the reference code's two-way
substring "EM" (which counts an empty answer as right).

Local data: JSONL with `context`, `question`, `answers` (list), as in
../shared/data/nq_open_oracle and data/icraqa.jsonl. Hub data: `trivia_qa:rc@validation`
(context = first wiki context + first search context, cut to 3,072 characters, as LLM-KICK).
"""

from __future__ import annotations

from pathlib import Path

from ..engine import GenerationConfig, Prompt
from . import data, metrics, text

NAME = "icraqa"
VERSION = 1  # bump when a change can alter this task's numbers (kickbench/versions.py)
KIND = "generate"
DEFAULT_DATA = data.PROJECT_DATA / "icraqa.jsonl"
GENERATION = GenerationConfig(max_new_tokens=24, stop=("\n",))
CONTEXT_CHARS = 3072

# Two short worked examples so that base and small models answer in a few words.
SHOTS = (
    ("The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was designed by "
     "the engineering company of Gustave Eiffel.", "Who designed the Eiffel Tower?", "Gustave Eiffel"),
    ("Mount Kilimanjaro, in Tanzania, is the highest mountain in Africa, rising 5,895 metres "
     "above sea level.", "How high is Mount Kilimanjaro?", "5,895 metres"),
)
TEMPLATES = {
    "open": "".join(f"Passage: {c}\nQuestion: {q}\nAnswer: {a}\n\n" for c, q, a in SHOTS)
    + "Passage: {context}\nQuestion: {question}\nAnswer:",
    "closed": "".join(f"Question: {q}\nAnswer: {a}\n\n" for _, q, a in SHOTS)
    + "Question: {question}\nAnswer:",
}
DEFAULT_TEMPLATE = "open"
SCORINGS = {"em": "exact_match", "f1": "f1", "legacy": "legacy_accuracy"}
HEADLINE = "f1"
METRICS = (metrics.accuracy("exact_match", "exact match"), metrics.Metric("f1", "token F1"),
           metrics.accuracy("legacy_accuracy", "accuracy (LLM-KICK legacy)"), *metrics.FLUENCY)


def load(source: str | Path | None = None) -> list[dict]:
    """Items as {id, context, question, answers}."""
    return data.load_items(str(source or DEFAULT_DATA), "ICRA-QA data file", adapt,
                           ("context", "question", "answers"))


def adapt(row: dict, index: int) -> dict:
    if "entity_pages" in row:  # HF trivia_qa rc
        wiki = (row["entity_pages"].get("wiki_context") or [""])[0]
        search = (row["search_results"].get("search_context") or [""])[0]
        answers = [row["answer"]["value"], *row["answer"].get("aliases", [])]
        return {"id": row.get("question_id", str(index)), "question": row["question"],
                "context": (wiki + " " + search).strip()[:CONTEXT_CHARS],
                "answers": list(dict.fromkeys(answers))}
    answers = row.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    return {"id": str(row.get("id", index)), "question": row.get("question"),
            "context": (row.get("context") or "")[:CONTEXT_CHARS], "answers": answers}


def prompt(item: dict, template: str = DEFAULT_TEMPLATE) -> Prompt:
    if template not in TEMPLATES:
        raise ValueError(f"unknown icraqa template {template!r}; available: {', '.join(TEMPLATES)}")
    return TEMPLATES[template].format(context=item["context"].strip(), question=item["question"].strip())


def fluency_context(item: dict) -> str:
    """The closed-book prompt: scoring answers after whole passages would cost a second run."""
    return prompt(item, "closed")


def score(item: dict, prompt_text: str, output: str) -> dict[str, float]:
    aliases = item["answers"]
    answer = text.first_line(output)
    return {"exact_match": float(text.exact_match(answer, aliases)),
            "f1": text.token_f1(answer, aliases),
            "legacy_accuracy": float(text.legacy_two_way(answer, aliases))}

"""Factoid QA (LLM-KICK's closed-book FreebaseQA task): generate a short answer, match aliases.

Local data: JSONL with `question` (str) and `answers` (list of aliases; `answer_aliases` is used
instead when present, as in ../shared/data/freebaseqa). Hub data: `freebase_qa` and any dataset
whose rows carry `question` + `answers`.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import GenerationConfig, Prompt
from . import data, metrics, text

NAME = "factoid"
VERSION = 1  # bump when a change can alter this task's numbers (kickbench/versions.py)
KIND = "generate"
DEFAULT_DATA = data.PROJECT_DATA / "factoid.jsonl"
GENERATION = GenerationConfig(max_new_tokens=16, stop=("\n",))

SHOTS = (
    ("What is the capital of France?", "Paris"),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare"),
    ("Which planet is known as the Red Planet?", "Mars"),
)
# fewshot works for base and chat models alike and scored best on the built-in model
# (see README); chat puts the same question through the model's chat template.
TEMPLATES = {
    "fewshot": "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in SHOTS)
    + "Question: {question}\nAnswer:",
    "chat": "Answer the question with a short factual answer.\n\n{question}",
}
DEFAULT_TEMPLATE = "fewshot"
# headline metric per scoring mode
SCORINGS = {"strict": "accuracy", "em": "exact_match", "legacy": "legacy_accuracy"}
HEADLINE = "accuracy"
METRICS = (metrics.accuracy("accuracy", "accuracy (strict)"),
           metrics.accuracy("exact_match", "exact match"),
           metrics.accuracy("legacy_accuracy", "accuracy (LLM-KICK legacy)"), *metrics.FLUENCY)


def load(source: str | Path | None = None) -> list[dict]:
    """Items as {id, question, answers}; source is a JSONL path or a hub dataset id."""
    return data.load_items(str(source or DEFAULT_DATA), "factoid data file", adapt,
                           ("question", "answers"))


def adapt(row: dict, index: int) -> dict:
    """Map a row of our schema, the shared FreebaseQA export, or HF `freebase_qa` to ours."""
    if "RawQuestion" in row:  # HF freebase_qa
        names = [n for p in row["Parses"]["Answers"] for ns in p["AnswersName"] for n in ns]
        return {"id": row.get("Question-ID", str(index)), "question": row["RawQuestion"],
                "answers": list(dict.fromkeys(names))}
    answers = row.get("answer_aliases") or row.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    return {"id": str(row.get("id", index)), "question": row.get("question"), "answers": answers}


def prompt(item: dict, template: str = DEFAULT_TEMPLATE) -> Prompt:
    if template not in TEMPLATES:
        raise ValueError(f"unknown factoid template {template!r}; available: {', '.join(TEMPLATES)}")
    body = TEMPLATES[template].format(question=item["question"])
    return [{"role": "user", "content": body}] if template == "chat" else body


def fluency_context(item: dict) -> str:
    """What the dense model reads before an answer when its fluency is measured."""
    return prompt(item, "fewshot")


def score(item: dict, prompt_text: str, output: str) -> dict[str, float]:
    """Per-sample metrics; strict looks only at the answer, legacy reproduces LLM-KICK."""
    aliases = item["answers"]
    return {
        "accuracy": float(text.contains_alias(output, aliases)),
        "exact_match": float(text.exact_match(output, aliases)),
        "legacy_accuracy": float(text.legacy_match(prompt_text, output, aliases)),
    }

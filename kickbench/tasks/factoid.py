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
VERSION = 3  # bump when a change can alter this task's numbers (kickbench/versions.py)
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
    # LLM-KICK's own prompt, byte for byte (factoid_qa/main_freebase.py line 117), trailing space
    "llmkick": "Please give answer to this question: {question}\nThe answer is ",
}
# The reference generates up to max_length = 3 x the prompt's tokens (main_freebase.py line 121),
# i.e. 2 x prompt tokens new (BOS included, as its tokenizer call adds it), with no stop string
# (EOS ends it). BUDGETS gives runners that number per prompt (runners.budgets);
# LLMKICK_MAX_NEW only bounds it (the reference has no bound; no FreebaseQA prompt comes near).
LLMKICK_PREFIX = TEMPLATES["llmkick"].partition("{")[0]
LLMKICK_LENGTH_FACTOR = 3
LLMKICK_MAX_NEW = 1024
GENERATIONS = {"llmkick": GenerationConfig(max_new_tokens=LLMKICK_MAX_NEW, stop=())}
DEFAULT_TEMPLATE = "fewshot"
# headline metric per scoring mode
SCORINGS = {"strict": "accuracy", "em": "exact_match", "haystack": "haystack_accuracy"}
HEADLINE = "accuracy"
# the llmkick template computes only the reference's metric(s), so it has its own headline
HEADLINES = {"llmkick": "llmkick_accuracy"}
METRICS = (metrics.accuracy("accuracy", "accuracy (strict)"),
           metrics.accuracy("exact_match", "exact match"),
           metrics.accuracy("haystack_accuracy", "answer anywhere in prompt + output"),
           metrics.accuracy("llmkick_accuracy", "accuracy (LLM-KICK reference protocol)"),
           # stores written before VERSION 2 name haystack_accuracy so
           metrics.accuracy("legacy_accuracy", "answer anywhere in prompt + output (old name)"),
           *metrics.FLUENCY)


def load(source: str | Path | None = None) -> list[dict]:
    """Items as {id, question, answers}; source is a JSONL path or a hub dataset id."""
    return data.load_items(str(source or DEFAULT_DATA), "factoid data file", adapt,
                           ("question", "answers"))


def adapt(row: dict, index: int) -> dict:
    """Map a row of our schema, the shared FreebaseQA export, or HF `freebase_qa` to ours."""
    if "RawQuestion" in row and isinstance(row.get("Parses"), dict):  # HF freebase_qa
        names = [n for p in row["Parses"]["Answers"] for ns in p["AnswersName"] for n in ns]
        return {"id": row.get("Question-ID", str(index)), "question": row["RawQuestion"],
                "answers": list(dict.fromkeys(names)),
                "reference_answers": list(row["Parses"]["Answers"][0]["AnswersName"][0])}
    if "RawQuestion" in row:  # FreebaseQA's own JSON (what LLM-KICK's freebase_qa.py reads)
        names = [n for p in row["Parses"] for a in p["Answers"] for n in a["AnswersName"]]
        return {"id": row.get("Question-ID", str(index)), "question": row["RawQuestion"],
                "answers": list(dict.fromkeys(names)),
                "reference_answers": list(row["Parses"][0]["Answers"][0]["AnswersName"])}
    answers = row.get("answer_aliases") or row.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    item = {"id": str(row.get("id", index)), "question": row.get("question"), "answers": answers}
    if row.get("parses"):  # the shared export: the first parse's answer name
        first = row["parses"][0].get("answer_name")
        if first:
            item["reference_answers"] = [first] if isinstance(first, str) else list(first)
    return item


def prompt(item: dict, template: str = DEFAULT_TEMPLATE) -> Prompt:
    if template not in TEMPLATES:
        raise ValueError(f"unknown factoid template {template!r}; available: {', '.join(TEMPLATES)}")
    body = TEMPLATES[template].format(question=item["question"])
    return [{"role": "user", "content": body}] if template == "chat" else body


def fluency_context(item: dict) -> str:
    """What the dense model reads before an answer when its fluency is measured."""
    return prompt(item, "fewshot")


def llmkick_budget(prompt_tokens: int) -> int:
    """New tokens the reference allows a prompt of `prompt_tokens` tokens (BOS included)."""
    return (LLMKICK_LENGTH_FACTOR - 1) * prompt_tokens


# per template: prompt tokens -> max_new_tokens of that prompt; BUDGET_RULES says it in the key
BUDGETS = {"llmkick": llmkick_budget}
BUDGET_RULES = {"llmkick": f"{LLMKICK_LENGTH_FACTOR - 1} x prompt tokens"}


def reference_answers(item: dict) -> list[str]:
    """LLM-KICK's answer set: FreebaseQA's first parse's first answer (freebase_qa.py line 125);
    data without parses (ours) has only `answers`."""
    return item.get("reference_answers") or item["answers"]


def score(item: dict, prompt_text: str, output: str) -> dict[str, float]:
    """Per-sample metrics. strict looks only at the answer; haystack searches prompt + output.
    On the llmkick template the one metric is the reference's: its answer set, searched in
    prompt + output (main_freebase.py lines 19-24, 122-123)."""
    if prompt_text.startswith(LLMKICK_PREFIX):  # the llmkick template's prompt
        return {"llmkick_accuracy": float(text.llmkick_substring(prompt_text + output,
                                                                 reference_answers(item)))}
    aliases = item["answers"]
    return {
        "accuracy": float(text.contains_alias(output, aliases)),
        "exact_match": float(text.exact_match(output, aliases)),
        "haystack_accuracy": float(text.haystack_match(prompt_text, output, aliases)),
    }

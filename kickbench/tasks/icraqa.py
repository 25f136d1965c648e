"""In-context retrieval QA (LLM-KICK's ICR-QA): answer from a passage (open book) or from
memory (closed book); the two templates side by side show how much of a compressed model's
loss is retrieval from context versus recall from its weights.

Scoring: the answer's first line, SQuAD normalisation, exact match and token F1, max over
aliases; an empty answer is wrong. `two_way` applies the reference code's two-way substring
"EM" (which counts an empty answer as right) to our prompts. The `llmkick` template is the
reference protocol itself (incontext_qa/main_icrqa.py): its prompt, 32 new tokens, its
prediction (the first line after the prompt), the TriviaQA normaliser, its "EM" and F1.

Local data: JSONL with `context`, `question`, `answers` (list), as in
../shared/data/nq_open_oracle and data/icraqa.jsonl. Hub data: `trivia_qa:rc@validation`
(context = first wiki context + first search context, cut to 3,072 characters, as LLM-KICK).
"""

from __future__ import annotations

from pathlib import Path

from ..engine import GenerationConfig, Prompt
from . import data, metrics, text

NAME = "icraqa"
VERSION = 2  # bump when a change can alter this task's numbers (kickbench/versions.py)
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
    # main_icrqa.py lines 34-36 and 75: f"{context[:3072]}\n\n{prompt_end}", then .strip()
    "llmkick": "{context}\n\nBased on these texts, answer these questions:\n\nQ: {question}\nA:",
}
LLMKICK_MARK = "Based on these texts, answer these questions:\n\nQ: "
LLMKICK_END = LLMKICK_MARK + "{question}\nA:"
# main_icrqa.py line 79: max_length = prompt tokens + 32; no stop string (EOS ends it)
GENERATIONS = {"llmkick": GenerationConfig(max_new_tokens=32, stop=())}
DEFAULT_TEMPLATE = "open"
SCORINGS = {"em": "exact_match", "f1": "f1", "two_way": "two_way_accuracy"}
HEADLINE = "f1"
# the llmkick template computes only the reference's metric(s), so it has its own headline
HEADLINES = {"llmkick": "llmkick_exact_match"}
METRICS = (metrics.accuracy("exact_match", "exact match"), metrics.Metric("f1", "token F1"),
           metrics.accuracy("two_way_accuracy", "answer inside an alias or alias inside it"),
           metrics.accuracy("llmkick_exact_match", "LLM-KICK \"EM\" (reference protocol, two-way)"),
           metrics.Metric("llmkick_f1", "LLM-KICK token F1 (reference protocol)"),
           # stores written before VERSION 2 name two_way_accuracy so
           metrics.accuracy("legacy_accuracy", "answer inside an alias or alias inside it (old name)"),
           *metrics.FLUENCY)


def load(source: str | Path | None = None) -> list[dict]:
    """Items as {id, context, question, answers}."""
    return data.load_items(str(source or DEFAULT_DATA), "ICRA-QA data file", adapt,
                           ("context", "question", "answers"))


def adapt(row: dict, index: int) -> dict:
    if "entity_pages" in row:  # HF trivia_qa rc
        wiki = (row["entity_pages"].get("wiki_context") or [""])[0]
        search = (row["search_results"].get("search_context") or [""])[0]
        answers = [row["answer"]["value"], *row["answer"].get("aliases", [])]
        # the reference: wiki then web evidence, each only when present, joined as they are
        # (main_icrqa.py lines 25-33, 71-73), cut to 3,072 characters
        ref = ((row["entity_pages"]["wiki_context"][0] if row["entity_pages"].get("filename") else "")
               + (row["search_results"]["search_context"][0]
                  if row["search_results"].get("filename") else ""))
        return {"id": row.get("question_id", str(index)), "question": row["question"],
                "context": (wiki + " " + search).strip()[:CONTEXT_CHARS],
                "answers": list(dict.fromkeys(answers)),
                "reference_context": ref[:CONTEXT_CHARS],
                # triviaqa_evaluation.py get_ground_truths: the normalized aliases
                "reference_answers": list(row["answer"].get("normalized_aliases") or answers)}
    answers = row.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    return {"id": str(row.get("id", index)), "question": row.get("question"),
            "context": (row.get("context") or "")[:CONTEXT_CHARS], "answers": answers}


def prompt(item: dict, template: str = DEFAULT_TEMPLATE) -> Prompt:
    if template not in TEMPLATES:
        raise ValueError(f"unknown icraqa template {template!r}; available: {', '.join(TEMPLATES)}")
    if template == "llmkick":  # nothing stripped but the whole prompt, as the reference
        context = item.get("reference_context", item["context"])[:CONTEXT_CHARS]
        return TEMPLATES[template].format(context=context, question=item["question"]).strip()
    return TEMPLATES[template].format(context=item["context"].strip(), question=item["question"].strip())


def fluency_context(item: dict) -> str:
    """The closed-book prompt: scoring answers after whole passages would cost a second run."""
    return prompt(item, "closed")


def llmkick_prediction(item: dict, prompt_text: str, output: str) -> str:
    """main_icrqa.py line 81: the decoded prompt + output split on the prompt's end, the part
    after its first occurrence, stripped, up to its first newline."""
    end = LLMKICK_END.format(question=item["question"])
    return (prompt_text + output).split(end)[1].strip().split("\n")[0]


def score(item: dict, prompt_text: str, output: str) -> dict[str, float]:
    if LLMKICK_MARK in prompt_text and "question" in item and prompt_text.endswith(
            LLMKICK_END.format(question=item["question"])):  # the llmkick template's prompt
        answers = item.get("reference_answers") or item["answers"]
        pred = llmkick_prediction(item, prompt_text, output)
        return {"llmkick_exact_match": float(text.llmkick_two_way(pred, answers)),
                "llmkick_f1": text.llmkick_f1(pred, answers)}
    aliases = item["answers"]
    answer = text.first_line(output)
    return {"exact_match": float(text.exact_match(answer, aliases)),
            "f1": text.token_f1(answer, aliases),
            "two_way_accuracy": float(text.two_way_match(answer, aliases))}

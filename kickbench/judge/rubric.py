"""Judge prompts and the parsing of their replies (pure string functions).

Pairwise prompts follow LLM-KICK's GPT-4 reviewer (after FastChat's): two answers, one score
per aspect for each. The order of the two answers is a parameter: the protocol asks both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Messages = list[dict]


@dataclass(frozen=True)
class Rubric:
    """What a judge rates: aspects scored 1-10, and how the prompt names the material."""

    name: str
    aspects: tuple[str, ...]
    system: str
    material: str  # "Story" or "Question": the block the answers respond to
    answer_word: str = "Answer"
    guidance: str = ""


SUMMARY = Rubric(
    "summary", ("coherence", "consistency", "fluency", "relevance"),
    "You are a helpful and precise assistant for checking the quality of the summarization of "
    "stories within 150 words.", "Story", "Summary",
    "Rate the coherence, consistency (faithfulness to the story), fluency and relevance of "
    "each summary.")
GENERAL = Rubric(
    "general", ("overall",),
    "You are a helpful and precise assistant for checking the quality of the answer.",
    "Question", "Answer",
    "Rate the helpfulness, relevance, accuracy, level of detail and factual correctness of "
    "each answer in one overall score.")
RUBRICS = {r.name: r for r in (SUMMARY, GENERAL)}

# a score 1-10 (optionally written "8/10"), not part of a longer number
SCORE = r"(10|[1-9](?:\.\d+)?)(?:\s*/\s*10)?(?!\d|\.\d)"
_PAIR = re.compile(rf"^\W*(?:[A-Za-z ]+[:=-]\s*)?{SCORE}\s*(?:,|\s|and|vs\.?)\s*{SCORE}")
_ONE = re.compile(rf"^\W*(?:[A-Za-z ]+[:=-]\s*)?{SCORE}")


def _format_lines(rubric: Rubric, per_line: str) -> str:
    names = ", ".join(rubric.aspects)
    if len(rubric.aspects) == 1:
        return f"Output first a single line containing only {per_line}."
    return (f"Output first {len(rubric.aspects)} lines, one per aspect in this order: {names}; "
            f"each line contains only {per_line}.")


def pairwise(rubric: Rubric, material: str, first: str, second: str) -> Messages:
    """Ask for scores of two answers; the caller decides which answer comes first."""
    w = rubric.answer_word
    body = (f"[{rubric.material}]\n{material}\n\n"
            f"[The Start of Assistant 1's {w}]\n{first}\n[The End of Assistant 1's {w}]\n\n"
            f"[The Start of Assistant 2's {w}]\n{second}\n[The End of Assistant 2's {w}]\n\n"
            f"[System]\nWe would like to request your feedback on the performance of two AI "
            f"assistants in response to the {rubric.material.lower()} displayed above.\n"
            f"{rubric.guidance} Each assistant receives a score on a scale of 1 to 10, where a "
            f"higher score indicates better performance.\n"
            + _format_lines(rubric, "two values, the scores for Assistant 1 and 2, separated by "
                                    "a space")
            + "\nIn the subsequent line, explain your evaluation, avoiding any bias and ensuring "
              "that the order in which the answers were presented does not affect your judgment.")
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": body}]


def single(rubric: Rubric, material: str, answer: str) -> Messages:
    """Grade one answer on the rubric, with no reference."""
    w = rubric.answer_word
    body = (f"[{rubric.material}]\n{material}\n\n"
            f"[The Start of the Assistant's {w}]\n{answer}\n[The End of the Assistant's {w}]\n\n"
            f"[System]\nPlease act as an impartial judge of the assistant's {w.lower()}. "
            f"{rubric.guidance} Use a scale of 1 to 10, where higher is better.\n"
            + _format_lines(rubric, "the score") + "\nThen explain your evaluation.")
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": body}]


def stricter(messages: Messages, rubric: Rubric, pair: bool) -> Messages:
    """The retry after an unreadable reply: the same request, with the format spelled out."""
    n = len(rubric.aspects)
    what = ("two numbers from 1 to 10 separated by a space: the score of Assistant 1, then "
            "the score of Assistant 2" if pair else "one number from 1 to 10")
    order = f" Line k rates {', '.join(rubric.aspects)} in that order." if n > 1 else ""
    rule = (f"\n\nIMPORTANT: your previous reply could not be read. Reply with exactly {n} "
            f"line(s) and nothing else; each line holds {what}.{order}")
    return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + rule}]


def parse(reply: str, rubric: Rubric, pair: bool) -> list[tuple[float, ...]] | None:
    """One tuple of scores per aspect (two per line when pair), from the first lines that carry
    scores; None when fewer lines than aspects can be read."""
    pattern = _PAIR if pair else _ONE
    found = []
    for line in reply.strip().splitlines():
        m = pattern.match(line.strip().replace("**", ""))
        if m:
            found.append(tuple(float(g) for g in m.groups()))
            if len(found) == len(rubric.aspects):
                return found
        elif found:  # score lines must be consecutive
            break
    return None

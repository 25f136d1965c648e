"""Answer normalisation and matching shared by the QA tasks (pure string functions)."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "‘’“”–—")


def normalize(text: str) -> str:
    """SQuAD normalisation: lowercase, punctuation and articles removed, whitespace folded."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def first_line(text: str) -> str:
    return next((line for line in text.strip().splitlines() if line.strip()), "")


def contains_alias(answer: str, aliases: list[str]) -> bool:
    """A normalised alias occurs in the normalised answer at word boundaries."""
    padded = f" {normalize(answer)} "
    return any(f" {a} " in padded for a in map(normalize, aliases) if a)


def exact_match(answer: str, aliases: list[str]) -> bool:
    norm = normalize(first_line(answer))
    return bool(norm) and any(norm == normalize(a) for a in aliases)


def legacy_match(prompt: str, answer: str, aliases: list[str]) -> bool:
    """LLM-KICK's reference check: alias without spaces, lowercased, inside prompt + output.

    It searches the prompt too, so questions that contain their answer always count.
    """
    hay = (prompt + answer).lower().replace(" ", "")
    return any(a.lower().replace(" ", "") in hay for a in aliases if a.strip())


def token_f1(answer: str, aliases: list[str]) -> float:
    """SQuAD token F1 of the answer's first line, max over aliases; an empty answer scores 0."""
    pred = normalize(first_line(answer)).split()
    best = 0.0
    for gold in (normalize(a).split() for a in aliases):
        common = sum(min(pred.count(t), gold.count(t)) for t in set(pred) & set(gold))
        if pred and gold and common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def legacy_two_way(answer: str, aliases: list[str]) -> bool:
    """LLM-KICK's ICR-QA "EM": prediction inside an alias or an alias inside the prediction
    (normalised). An empty prediction is inside every alias, so it counts as right."""
    pred = normalize(answer)
    return any(pred in normalize(a) or normalize(a) in pred for a in aliases)


def unique_token_ratio(text: str) -> float:
    """Distinct words over words (1.0 = no repetition); LLM-KICK notes compressed models repeat.
    Empty text scores nan (nothing to measure)."""
    words = text.lower().split()
    return len(set(words)) / len(words) if words else float("nan")

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

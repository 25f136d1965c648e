"""Instruction following: Vicuna-80 (one turn; what LLM-KICK's code used, with its GPT-3.5
answers as the reference) and MT-Bench (two turns: the second question follows the model's
own first answer). Judged 1-10 per answer, pairwise against the reference answer in both
orders where there is one, graded alone otherwise; ROUGE-L against the reference as a
judge-free signal; the unique-token ratio shows repetition.

Each turn is one sample (`<id>/turn<k>`), generated in rounds: every first turn, then every
second turn. `--limit` counts turns.

Local data: JSONL with `turns` (list of user messages) and optional references:
`reference_gpt35_llmkick` (str, Vicuna), `reference_gpt4` (one per turn), `reference` (short
MT-Bench references). ../shared/data/vicuna_bench/vicuna_bench.jsonl, ../shared/data/mt_bench/
mt_bench.jsonl, or the project's data/instruct.jsonl.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import GenerationConfig, Prompt
from ..judge import Request, reference
from ..judge.rubric import GENERAL
from . import data, metrics, text

NAME = "instruct"
VERSION = 1  # bump when a change can alter this task's numbers (kickbench/versions.py)
KIND = "dialogue"
DEFAULT_DATA = data.PROJECT_DATA / "instruct.jsonl"
GENERATION = GenerationConfig(max_new_tokens=256, stop=())
RUBRIC = GENERAL
TEMPLATES = {"chat": "{turn}"}  # each turn through the model's chat template
DEFAULT_TEMPLATE = "chat"
SCORINGS = {"rouge": "rougeL", "repetition": "unique_token_ratio", "words": "words"}
HEADLINE = "rougeL"
METRICS = (metrics.Metric("rougeL", "ROUGE-L F1"),
           metrics.Metric("unique_token_ratio", "unique-token ratio"),
           metrics.Metric("words", "words", higher_is_better=False),
           *metrics.JUDGE, *metrics.aspects(RUBRIC))


def load(source: str | Path | None = None) -> list[dict]:
    """Dialogues as {id, category, turns, references (one per turn or None)}."""
    return data.load_items(str(source or DEFAULT_DATA), "instruction data file", adapt, ("turns",))


def adapt(row: dict, index: int) -> dict:
    turns = row.get("turns") or ([row["text"]] if row.get("text") else None)
    refs = row.get("reference_gpt35_llmkick") or row.get("reference_gpt4") or row.get("reference")
    refs = [refs] if isinstance(refs, str) else list(refs or [])
    n = len(turns or [])
    refs = (refs + [None] * n)[:n]  # one per turn; a turn without one is graded alone
    return {"id": str(row.get("id", index)), "category": row.get("category", "general"),
            "turns": turns, "references": refs}


def expand(items: list[dict]) -> list[dict]:
    """One sample per turn, dialogue by dialogue."""
    return [{"id": f"{it['id']}/turn{k + 1}", "dialogue": it["id"], "turn": k,
             "category": it["category"], "turns": it["turns"][:k + 1],
             "reference": it["references"][k]}
            for it in items for k in range(len(it["turns"]))]


def history(sample: dict, answers: dict[str, str]) -> list[str]:
    """The model's own earlier answers in this sample's dialogue, from {sample id: output}."""
    return [answers[f"{sample['dialogue']}/turn{k + 1}"] for k in range(sample["turn"])]


def prompt(sample: dict, template: str, history: list[str]) -> Prompt:
    """The conversation so far (user turns and the model's own earlier answers), then this turn."""
    messages = []
    for question, answer in zip(sample["turns"], history):
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": TEMPLATES[template].format(turn=sample["turns"][-1])}]


def score(sample: dict, prompt_text: str, output: str) -> dict[str, float]:
    ref = sample.get("reference")
    return {**({"rougeL": reference.rouge(output, ref)["rougeL"]} if ref else {}),
            "words": float(len(output.split())), "unique_token_ratio": text.unique_token_ratio(output)}


def judge_request(sample: dict, output: str, history: list[str]) -> Request:
    """A later turn is judged with the earlier exchange shown as part of the question."""
    earlier = "".join(f"(Earlier question: {q})\n(Earlier answer: {a})\n\n"
                      for q, a in zip(sample["turns"], history))
    return Request(earlier + sample["turns"][-1], output.strip(), sample.get("reference"))

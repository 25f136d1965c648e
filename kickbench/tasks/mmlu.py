"""Multiple-choice reasoning (LLM-KICK's MCR-QA on MMLU): k-shot Hendrycks prompts, scored by
log-likelihood, never by parsing generated text.

Scorings, all from the same forward passes:
- letter: the log-probabilities of " A".." D" after "Answer:" (one pass per question);
- cloze: the log-likelihood of each option's text after "Answer:" in the question/answer
  format (lm-eval's `mmlu_continuation`), raw and normalised by the option's length in
  characters (lm-eval's acc_norm);
- next_char: the last character of the greedy next token after the letter prompt (the
  reference's rule on our prompt);
- llmkick (template `llmkick`): LLM-KICK's reference protocol (multiple_choice_qa/main_mmlu.py):
  its prompt byte for byte, shots dropped while it exceeds 2048 tokens, one greedy token, the
  last character of the decoded text against the answer letter.

Local data: JSONL rows `subject, question, choices[4], answer` (0-3) as in ../shared/data/mmlu
(`category` optional); the shots come from `dev.jsonl` beside the file. Hub data: `cais/mmlu`
(`cais/mmlu:all@test`, shots from its dev split). Items are interleaved across subjects, so the
first N span every subject.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Choice
from . import data, metrics

NAME = "mmlu"
VERSION = 2  # bump when a change can alter this task's numbers (kickbench/versions.py)
KIND = "choice"
DEFAULT_DATA = data.PROJECT_DATA / "mmlu" / "test.jsonl"
MAX_CONTEXT = 2048  # prompt tokens, as in Hendrycks' evaluate.py; shots are dropped to fit
LETTERS = "ABCD"
HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
CLOZE_HEADER = "The following are questions (with answers) about {subject}.\n\n"
TEMPLATES = {  # the text describes the prompt; it is part of every result's key
    "5-shot": "Hendrycks MMLU prompt, 5 dev shots of the subject; letter + cloze",
    "0-shot": "Hendrycks MMLU prompt, no shots; letter + cloze",
    "llmkick": "LLM-KICK main_mmlu.py prompt byte for byte, 5 dev shots, last character of one "
               "greedy token",
}
SHOTS = {"5-shot": 5, "0-shot": 0, "llmkick": 5}
LLMKICK_MAX_TOKENS = 2048  # main_mmlu.py line 74: shots dropped while the prompt is longer
DEFAULT_TEMPLATE = "5-shot"
SCORINGS = {"letter": "letter_accuracy", "cloze": "cloze_accuracy",
            "cloze_norm": "cloze_norm_accuracy", "next_char": "next_char_accuracy"}
HEADLINE = "cloze_norm_accuracy"  # letter scoring sits at chance (0.25) on very small models
# the llmkick template computes only the reference's metric(s), so it has its own headline
HEADLINES = {"llmkick": "llmkick_accuracy"}
METRICS = (metrics.accuracy("letter_accuracy", "accuracy (letter)"),
           metrics.accuracy("cloze_accuracy", "accuracy (cloze)"),
           metrics.accuracy("cloze_norm_accuracy", "accuracy (cloze, length-normalised)"),
           metrics.accuracy("next_char_accuracy", "accuracy (last character of the next token)"),
           metrics.accuracy("llmkick_accuracy", "accuracy (LLM-KICK reference protocol)"),
           # stores written before VERSION 2 name next_char_accuracy so
           metrics.accuracy("legacy_accuracy", "accuracy (last character of the next token, "
                                               "old name)"))

CATEGORIES = {
    "STEM": "abstract_algebra astronomy college_biology college_chemistry college_computer_science "
            "college_mathematics college_physics computer_security conceptual_physics "
            "electrical_engineering elementary_mathematics high_school_biology high_school_chemistry "
            "high_school_computer_science high_school_mathematics high_school_physics "
            "high_school_statistics machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history "
                  "high_school_world_history international_law jurisprudence logical_fallacies "
                  "moral_disputes moral_scenarios philosophy prehistory professional_law "
                  "world_religions",
    "social sciences": "econometrics high_school_geography high_school_government_and_politics "
                       "high_school_macroeconomics high_school_microeconomics "
                       "high_school_psychology human_sexuality professional_psychology "
                       "public_relations security_studies sociology us_foreign_policy",
    "other": "anatomy business_ethics clinical_knowledge college_medicine global_facts "
             "human_aging management marketing medical_genetics miscellaneous nutrition "
             "professional_accounting professional_medicine virology",
}
SUBJECT_CATEGORY = {s: c for c, subjects in CATEGORIES.items() for s in subjects.split()}


def load(source: str | Path | None = None) -> list[dict]:
    """Items {id, subject, category, question, choices, answer, _shots}, interleaved by subject."""
    source = str(source or DEFAULT_DATA)
    rows = [adapt(r, i, "test") for i, r in enumerate(data.read_rows(source, "MMLU data file"))]
    data.require_fields(rows, ("subject", "question", "choices"), source)
    shots: dict[str, list[dict]] = {}
    for row in (adapt(r, i, "dev") for i, r in enumerate(_dev_rows(source))):
        shots.setdefault(row["subject"], []).append(
            {k: row[k] for k in ("question", "choices", "answer")})
    rank: dict[str, int] = {}
    for row in rows:
        if len(row["choices"]) != 4 or row["answer"] not in range(4):
            raise ValueError(f"{source}: item {row['id']} needs 4 choices and an answer in 0-3, "
                             f"got {len(row['choices'])} choices and answer {row['answer']!r}")
        row["_rank"] = rank[row["subject"]] = rank.get(row["subject"], -1) + 1
        row["_shots"] = shots.get(row["subject"], [])
    rows.sort(key=lambda r: (r.pop("_rank"), r["subject"]))
    return rows


def _dev_rows(source: str) -> list[dict]:
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        dev = path.with_name("dev.jsonl")
        return data.read_jsonl(dev) if dev.is_file() and dev != path else []
    name = source.partition("@")[0]
    return data.load_hub(f"{name}@dev")


def adapt(row: dict, index: int, split: str) -> dict:
    """Our schema from the shared export or `cais/mmlu` (answer as an int 0-3)."""
    answer = row.get("answer")
    if isinstance(answer, str) and answer in LETTERS:
        answer = LETTERS.index(answer)
    subject = row.get("subject", "")
    category = row.get("category") or SUBJECT_CATEGORY.get(subject, "other")
    return {"id": str(row.get("id", f"mmlu-{split}-{subject}-{index:05d}")), "subject": subject,
            "category": category.split(" (")[0], "question": row.get("question"),
            "choices": list(row.get("choices") or []), "answer": answer}


def _subject(item: dict) -> str:
    return item["subject"].replace("_", " ")


def _letter_block(q: dict, with_answer: bool) -> str:
    lines = [q["question"].strip()] + [f"{L}. {c}" for L, c in zip(LETTERS, q["choices"])]
    return "\n".join(lines) + "\nAnswer:" + (f" {LETTERS[q['answer']]}\n\n" if with_answer else "")


def _cloze_block(q: dict, with_answer: bool) -> str:
    text = f"Question: {q['question'].strip()}\nAnswer:"
    return text + (f" {q['choices'][q['answer']]}\n\n" if with_answer else "")


def prompts(item: dict, shots: int) -> dict[str, str]:
    """The letter and cloze contexts with the first `shots` dev examples of the subject."""
    ex = item["_shots"][:shots]
    return {
        "letter": HEADER.format(subject=_subject(item))
        + "".join(_letter_block(q, True) for q in ex) + _letter_block(item, False),
        "cloze": CLOZE_HEADER.format(subject=_subject(item))
        + "".join(_cloze_block(q, True) for q in ex) + _cloze_block(item, False),
    }


def llmkick_prompt(item: dict, k: int) -> str:
    """main_mmlu.py lines 30-56: format_subject puts a space before every word (so "about  high
    school physics."), nothing is stripped, an example ends "Answer:" (+ " X\n\n" for shots)."""
    def example(q, with_answer):
        out = q["question"] + "".join(f"\n{L}. {c}" for L, c in zip(LETTERS, q["choices"]))
        return out + "\nAnswer:" + (f" {LETTERS[q['answer']]}\n\n" if with_answer else "")
    subject = "".join(" " + w for w in item["subject"].split("_"))
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return header + "".join(example(q, True) for q in item["_shots"][:k]) + example(item, False)


def requests(item: dict, template: str, tokenizer, max_context: int = MAX_CONTEXT) -> dict[str, Choice]:
    """Both requests of an item; shots are dropped from the end while a prompt is too long."""
    if template == "llmkick":  # main_mmlu.py lines 65-77 (k stops at 0 here)
        k = SHOTS[template]
        text = llmkick_prompt(item, k)
        while len(tokenizer(text)["input_ids"]) > LLMKICK_MAX_TOKENS and k > 0:
            k -= 1
            text = llmkick_prompt(item, k)
        return {"llmkick": Choice(text, tuple(f" {L}" for L in LETTERS))}
    k = min(SHOTS[template], len(item["_shots"]))
    while True:
        texts = prompts(item, k)
        longest = max(len(tokenizer(t)["input_ids"]) for t in texts.values())
        if longest < max_context or k == 0:
            break
        k -= 1
    return {"letter": Choice(texts["letter"], tuple(f" {L}" for L in LETTERS)),
            "cloze": Choice(texts["cloze"], tuple(f" {c}" for c in item["choices"]))}


def score(item: dict, results: dict) -> dict[str, float]:
    """Per-item metrics from the ChoiceResults of `requests` (same keys)."""
    if "llmkick" in results:  # main_mmlu.py lines 80-85: output[-1:] == label
        return {"llmkick_accuracy": float(results["llmkick"].next_token[-1:] == LETTERS[item["answer"]])}
    letter, cloze = results["letter"], results["cloze"]
    gold = item["answer"]
    norm = [lp / max(len(c), 1) for lp, c in zip(cloze.logprobs, item["choices"])]
    return {
        "letter_accuracy": float(_argmax(letter.logprobs) == gold),
        "cloze_accuracy": float(_argmax(cloze.logprobs) == gold),
        "cloze_norm_accuracy": float(_argmax(norm) == gold),
        "next_char_accuracy": float(letter.next_token.strip()[-1:] == LETTERS[gold]),
    }


def answer_text(item: dict, results: dict) -> str:
    """What the model 'answered', for per-sample records and diffs."""
    if "llmkick" in results:
        return results["llmkick"].next_token
    letter = LETTERS[_argmax(results["letter"].logprobs)]
    return f"{letter} | {item['choices'][_argmax(results['cloze'].logprobs)]}"


def _argmax(values) -> int:
    return max(range(len(values)), key=lambda i: values[i])

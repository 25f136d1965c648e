"""Faithful science (issue 17): project data never holds a task's own few-shot examples, and
the `llmkick` templates reproduce the LLM-KICK reference code (VITA-Group/llm-kick, commit
37f2122) on crafted cases whose expected results follow by hand from the reference's lines."""

from kickbench.tasks import data, factoid, icraqa, mmlu, text


def _norm(q: str) -> str:
    return text.normalize(q)


def test_no_project_data_holds_its_own_shots():
    for module in (factoid, icraqa):
        shot_questions = {_norm(s[-2]) for s in module.SHOTS}
        items = module.load()
        overlap = [it["id"] for it in items if _norm(it["question"]) in shot_questions]
        assert not overlap, f"{module.NAME}: items repeat the prompt's shots: {overlap}"
        # nor any shot's passage (an open-book shot would hold the item's answer)
        if module is icraqa:
            passages = {_norm(c) for c, _, _ in module.SHOTS}
            assert not [it["id"] for it in items if _norm(it["context"]) in passages]
    test = {_norm(it["question"]) for it in mmlu.load()}
    dev = {_norm(r["question"]) for r in data.read_jsonl(data.PROJECT_DATA / "mmlu" / "dev.jsonl")}
    assert not test & dev, f"MMLU test items repeat dev shots: {sorted(test & dev)[:5]}"


def test_the_replaced_factoid_items_keep_their_ids():
    items = {it["id"]: it for it in factoid.load()}
    assert items["fact-0025"]["answers"] == ["Lima"]
    assert items["fact-0083"]["answers"] == ["Neptune"]
    assert "Charlotte Brontë" in items["fact-0142"]["answers"]
    assert len(items) == 300


# -- factoid: factoid_qa/main_freebase.py and freebase_qa.py ------------------------------------

def test_factoid_llmkick_prompt_and_generation_are_the_references():
    # main_freebase.py line 117: f"Please give answer to this question: {question}\nThe answer is "
    assert factoid.prompt({"question": "Who painted the Mona Lisa?"}, "llmkick") == \
        "Please give answer to this question: Who painted the Mona Lisa?\nThe answer is "
    # line 121: max_length = 3 x prompt tokens -> 2 x prompt tokens new; no stop string
    assert factoid.llmkick_budget(20) == 40
    assert factoid.GENERATIONS["llmkick"].stop == ()


def _fscore(question, output, answers, **extra):
    item = {"question": question, "answers": answers, **extra}
    return factoid.score(item, factoid.prompt(item, "llmkick"), output)


def test_factoid_llmkick_scores_as_validate_response():
    # lines 19-24: output.strip().replace(" ", "").lower(); answer likewise; `ans in output`
    assert _fscore("Who painted the Mona Lisa?", "Leonardo Da  Vinci, of course",
                   ["Leonardo da Vinci"]) == {"llmkick_accuracy": 1.0}
    assert _fscore("Who painted the Mona Lisa?", "Michelangelo", ["Leonardo da Vinci"]) == \
        {"llmkick_accuracy": 0.0}
    # the decoded output holds the prompt (line 122), so an answer in the question counts
    assert _fscore("Is Paris the capital of France?", "", ["Paris"])["llmkick_accuracy"] == 1.0
    # substring, not words: "Parisian" holds "paris"
    assert _fscore("Which city?", "Parisian", ["Paris"])["llmkick_accuracy"] == 1.0
    # no empty-answer guard in the reference: an answer of spaces is in every output
    assert _fscore("Which city?", "no idea", ["  "])["llmkick_accuracy"] == 1.0


def test_factoid_llmkick_uses_the_first_parses_first_answer():
    # freebase_qa.py line 125: question["Parses"][0]["Answers"][0]["AnswersName"]
    raw = {"Question-ID": "q1", "RawQuestion": "Which band recorded 'Dream On'?",
           "Parses": [{"Answers": [{"AnswersMid": "m.1", "AnswersName": ["aerosmith"]},
                                   {"AnswersMid": "m.2", "AnswersName": ["steven tyler"]}]},
                      {"Answers": [{"AnswersMid": "m.3", "AnswersName": ["the band"]}]}]}
    item = factoid.adapt(raw, 0)
    assert item["reference_answers"] == ["aerosmith"]
    assert set(item["answers"]) == {"aerosmith", "steven tyler", "the band"}
    p = factoid.prompt(item, "llmkick")
    assert factoid.score(item, p, "Steven Tyler") == {"llmkick_accuracy": 0.0}
    assert factoid.score(item, p, "Aerosmith") == {"llmkick_accuracy": 1.0}
    # the HF `freebase_qa` layout (Parses as a dict of lists)
    hf = {"Question-ID": "q2", "RawQuestion": "Q?",
          "Parses": {"Answers": [{"AnswersMid": ["m.1", "m.2"], "AnswersName": [["a", "a2"], ["b"]]},
                                 {"AnswersMid": ["m.3"], "AnswersName": [["c"]]}]}}
    assert factoid.adapt(hf, 0)["reference_answers"] == ["a", "a2"]


def test_factoid_other_templates_have_no_reference_named_metric():
    item = {"question": "Which planet is the eighth from the Sun?", "answers": ["Neptune"]}
    m = factoid.score(item, factoid.prompt(item, "fewshot"), "")
    assert set(m) == {"accuracy", "exact_match", "haystack_accuracy"}
    assert m["haystack_accuracy"] == 0.0  # the shots no longer hold any item's answer


# -- ICR-QA: incontext_qa/main_icrqa.py, utils/triviaqa_evaluation.py ---------------------------

def test_icraqa_llmkick_prompt_is_the_references():
    # lines 34-36, 75-76: f"{context[:3072]}\n\n{prompt_end}".strip(), nothing else stripped
    item = {"context": "  The tower is 330 metres tall.  ", "question": "How tall is it? ",
            "answers": ["330 metres"]}
    assert icraqa.prompt(item, "llmkick") == ("The tower is 330 metres tall.  \n\nBased on these "
                                              "texts, answer these questions:\n\nQ: How tall is it? \nA:")
    empty = dict(item, context="")
    assert icraqa.prompt(empty, "llmkick").startswith("Based on these texts")
    assert icraqa.prompt(dict(item, context="x" * 5000), "llmkick").startswith("x" * 3072 + "\n\n")
    # line 79: max_length = prompt tokens + 32; no stop string
    assert icraqa.GENERATIONS["llmkick"].max_new_tokens == 32
    assert icraqa.GENERATIONS["llmkick"].stop == ()


def _iscore(output, answers, context="Some passage."):
    item = {"context": context, "question": "Q?", "answers": answers}
    return icraqa.score(item, icraqa.prompt(item, "llmkick"), output)


def test_icraqa_llmkick_prediction_normaliser_and_scores():
    # line 81: output.split(prompt_end)[1].strip().split("\n")[0]
    assert _iscore(" Gustave Eiffel\nQ: next?", ["Gustave Eiffel"]) == \
        {"llmkick_exact_match": 1.0, "llmkick_f1": 1.0}
    # a leading newline is stripped before the first line is taken
    assert _iscore("\n\nGustave Eiffel", ["Gustave Eiffel"])["llmkick_exact_match"] == 1.0
    # TriviaQA normaliser (triviaqa_evaluation.py lines 14-33): punctuation -> space,
    # so "1,000" is "1 000": not "1000", in either direction
    assert _iscore("1000", ["1,000"]) == {"llmkick_exact_match": 0.0, "llmkick_f1": 0.0}
    assert _iscore("1,000 ships", ["1,000"])["llmkick_exact_match"] == 1.0
    # two-way substring (lines 55-56): the prediction inside an answer counts
    m = _iscore("Eiffel", ["Gustave Eiffel"])
    assert m["llmkick_exact_match"] == 1.0 and abs(m["llmkick_f1"] - 2 / 3) < 1e-12
    # an empty prediction is inside every answer: "EM" 1, F1 0 (lines 43-48)
    assert _iscore("", ["Gustave Eiffel"]) == {"llmkick_exact_match": 1.0, "llmkick_f1": 0.0}
    # underscores and the reference's extra quote marks become spaces too
    assert text.triviaqa_normalize("New_York ´City` the") == "new york city"


def test_icraqa_llmkick_reads_triviaqa_as_the_reference():
    # lines 25-33, 71-73: wiki evidence then web evidence, each only when its filename list
    # is non-empty, concatenated as they are; ground truths = normalized_aliases
    row = {"question_id": "t1", "question": "Q?",
           "entity_pages": {"filename": [], "wiki_context": []},
           "search_results": {"filename": ["w.txt"], "search_context": ["Web text."]},
           "answer": {"value": "Paris", "aliases": ["Paris, France"],
                      "normalized_aliases": ["paris", "paris france"]}}
    item = icraqa.adapt(row, 0)
    assert item["reference_context"] == "Web text."
    assert item["reference_answers"] == ["paris", "paris france"]
    row["entity_pages"] = {"filename": ["p.txt"], "wiki_context": ["Wiki text."]}
    assert icraqa.adapt(row, 0)["reference_context"] == "Wiki text.Web text."
    assert icraqa.prompt(icraqa.adapt(row, 0), "llmkick").startswith("Wiki text.Web text.\n\n")


def test_icraqa_other_templates_keep_their_metrics_under_honest_names():
    item = {"context": "c", "question": "Q?", "answers": ["Paris"]}
    m = icraqa.score(item, icraqa.prompt(item, "open"), "")
    assert m == {"exact_match": 0.0, "f1": 0.0, "two_way_accuracy": 1.0}


# -- MMLU: multiple_choice_qa/main_mmlu.py ---------------------------------------------------------

def _mitem(subject="high_school_physics", shots=1, question="What is 2+2? "):
    shot = {"question": "Shot q", "choices": ["w", "x", "y", "z"], "answer": 2}
    return {"subject": subject, "question": question, "choices": ["3", "4", "5", "6"],
            "answer": 1, "_shots": [shot] * shots}


def test_mmlu_llmkick_prompt_is_the_references_byte_for_byte():
    # lines 30-56: format_subject(" high school physics"), no strip, " C\n\n" after a shot
    assert mmlu.llmkick_prompt(_mitem(), 1) == (
        "The following are multiple choice questions (with answers) about  high school physics."
        "\n\nShot q\nA. w\nB. x\nC. y\nD. z\nAnswer: C\n\n"
        "What is 2+2? \nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")


class _CharTokenizer:
    """One token per character, plus BOS."""

    def __call__(self, text):
        return {"input_ids": [0] + [1] * len(text)}


def test_mmlu_llmkick_drops_shots_while_longer_than_2048_tokens():
    # lines 72-77: `while input_ids.shape[-1] > 2048: k -= 1` (2048 itself is kept)
    tok = _CharTokenizer()
    item = _mitem(shots=5, question="")
    one = len(mmlu.llmkick_prompt(item, 1)) - len(mmlu.llmkick_prompt(item, 0))
    base = len(mmlu.llmkick_prompt(item, 0)) + 1  # + BOS
    # a question long enough that exactly 2 shots fit in 2048 tokens
    item = _mitem(shots=5, question="q" * (2048 - base - 2 * one))
    ctx = mmlu.requests(item, "llmkick", tok)["llmkick"].context
    assert len(tok(ctx)["input_ids"]) == 2048 and ctx == mmlu.llmkick_prompt(item, 2)


class _Result:
    def __init__(self, next_token):
        self.next_token = next_token


def test_mmlu_llmkick_scores_the_last_character():
    # lines 80-85: output[-1:] == label, on the decoded prompt + one token
    item = _mitem()
    for token, right in ((" B", 1.0), ("B", 1.0), (" A", 0.0), ("B\n", 0.0), ("", 0.0),
                         (" b", 0.0)):
        assert mmlu.score(item, {"llmkick": _Result(token)}) == {"llmkick_accuracy": right}, token


def test_llmkick_is_a_template_of_each_task_with_its_own_headline():
    from kickbench.tasks import TaskSpec, metric

    for name, headline in (("factoid", "llmkick_accuracy"), ("icraqa", "llmkick_exact_match"),
                           ("mmlu", "llmkick_accuracy")):
        spec = TaskSpec.parse(f"{name}:llmkick")
        assert spec.template_name == "llmkick"
        assert spec.module.HEADLINES["llmkick"] == headline
        assert "reference protocol" in metric(headline, name).title
        # no other metric names the reference
        assert not [m.name for m in spec.module.METRICS
                    if "LLM-KICK" in m.title and not m.name.startswith("llmkick")]

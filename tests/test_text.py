from kickbench.tasks import factoid
from kickbench.tasks.text import contains_alias, exact_match, legacy_match, normalize


def test_normalize_strips_case_punctuation_and_articles():
    assert normalize("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize("An apple, a day") == "apple day"


def test_strict_match_needs_word_boundaries_and_looks_at_the_answer_only():
    assert contains_alias("It is Paris, of course.", ["Paris"])
    assert not contains_alias("Parisian food", ["Paris"])
    assert contains_alias("William Shakespeare wrote it", ["Shakespeare"])
    assert not contains_alias("", ["Paris"])


def test_exact_match_uses_the_first_line():
    assert exact_match(" Paris\nmore text", ["paris"])
    assert not exact_match("It is Paris", ["Paris"])


def test_legacy_reproduces_llm_kick_substring_over_prompt_and_output():
    # spaces removed on both sides, so "New York" matches "newyorkcity"
    assert legacy_match("Q: ...\nA:", " NewYork City", ["new york"])
    # a bare substring counts, unlike strict scoring
    assert legacy_match("", "Parisian", ["Paris"]) and not contains_alias("Parisian", ["Paris"])
    # the prompt counts too: an answer named in the question is always "right"
    assert legacy_match("Which city is Paris?", "I don't know", ["Paris"])


def test_factoid_scores_all_three_from_one_answer():
    item = {"id": "x", "question": "Which city is Paris?", "answers": ["Paris"]}
    prompt = factoid.prompt(item)
    assert prompt.endswith("Question: Which city is Paris?\nAnswer:")
    assert factoid.score(item, prompt, " London") == {
        "accuracy": 0.0, "exact_match": 0.0, "haystack_accuracy": 1.0}
    assert factoid.score(item, prompt, " Paris") == {
        "accuracy": 1.0, "exact_match": 1.0, "haystack_accuracy": 1.0}


def test_chat_template_prompt_is_a_message_list():
    item = {"id": "x", "question": "Q?", "answers": ["a"]}
    assert factoid.prompt(item, "chat")[-1]["role"] == "user"

import json
from collections import Counter

import pytest

from kickbench.tasks import TaskSpec, factoid
from kickbench.tasks.data import items_hash

SHARED = factoid.data.PROJECT_DATA.parents[1] / "shared" / "data"


def test_project_factoid_set_follows_the_documented_schema():
    items = factoid.load()
    assert len(items) >= 200
    assert len({it["question"] for it in items}) == len(items)
    assert all(it["answers"] and all(a.strip() for a in it["answers"]) for it in items)
    topics = Counter(json.loads(l)["topic"] for l in open(factoid.DEFAULT_DATA))
    assert len(topics) >= 8


def test_shared_freebaseqa_uses_answer_aliases():
    path = SHARED / "freebaseqa" / "eval.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    items = factoid.load(path)
    assert len(items) == 3999
    assert all(len(it["answers"]) >= 1 for it in items)


def test_hf_freebase_qa_rows_are_adapted():
    row = {"Question-ID": "FreebaseQA-eval-0", "RawQuestion": "Who?", "ProcessedQuestion": "who",
           "Parses": {"Answers": [{"AnswersMid": ["m.1"], "AnswersName": [["alpha", "a1"]]},
                                  {"AnswersMid": ["m.2"], "AnswersName": [["alpha"]]}]}}
    assert factoid.adapt(row, 0) == {"id": "FreebaseQA-eval-0", "question": "Who?",
                                     "answers": ["alpha", "a1"],
                                     # the llmkick protocol's set: the first parse's first answer
                                     "reference_answers": ["alpha", "a1"]}


def test_bad_data_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        factoid.load(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?"}\n')
    with pytest.raises(ValueError, match="lacks field"):
        factoid.load(bad)
    bad.write_text('{"question": "Q?", "answers": ["a"]}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        factoid.load(bad)


def test_items_hash_changes_with_content():
    a = [{"id": "1", "question": "Q?", "answers": ["a"]}]
    assert items_hash(a) == items_hash(json.loads(json.dumps(a)))
    assert items_hash(a) != items_hash([{**a[0], "answers": ["b"]}])


def test_unknown_task_and_template():
    with pytest.raises(ValueError, match="unknown task 'nope'; available: factoid"):
        TaskSpec("nope")
    with pytest.raises(ValueError, match="unknown template 'x' for task factoid"):
        TaskSpec("factoid", template="x")

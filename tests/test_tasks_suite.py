"""MMLU (multiple choice) and ICRA-QA (open/closed book): prompts, scorers, sweeps."""

import json

import pytest

from kickbench import sweep
from kickbench.compress.spec import CompressionSpec
from kickbench.engine import ChoiceResult
from kickbench.tasks import TaskSpec, icraqa, mmlu, text


def item(q="What is 2 + 2?", choices=("3", "4", "5", "22"), answer=1, shots=()):
    return {"id": "x", "subject": "elementary_mathematics", "category": "STEM", "question": q,
            "choices": list(choices), "answer": answer, "_shots": list(shots)}


SHOT = {"question": "What is 1 + 1?", "choices": ["2", "3", "4", "5"], "answer": 0}


def test_letter_and_cloze_prompts_follow_hendrycks_and_lm_eval_formats():
    p = mmlu.prompts(item(shots=[SHOT]), shots=1)
    assert p["letter"] == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "What is 1 + 1?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer: A\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:")
    assert p["cloze"] == ("The following are questions (with answers) about elementary mathematics.\n\n"
                          "Question: What is 1 + 1?\nAnswer: 2\n\nQuestion: What is 2 + 2?\nAnswer:")


def test_shots_are_dropped_from_the_end_until_the_prompt_fits(tiny):
    tok = tiny().tokenizer
    it = item(shots=[dict(SHOT, question=f"Shot {i}: what is 1 + 1?") for i in range(5)])
    full = mmlu.requests(it, "5-shot", tok)
    assert full["letter"].context.count("Answer: A") == 5
    longest_with_2 = max(len(tok(p)["input_ids"]) for p in mmlu.prompts(it, 2).values())
    cut = mmlu.requests(it, "5-shot", tok, max_context=longest_with_2 + 1)
    assert cut["letter"].context.count("Answer: A") == 2
    assert "Shot 1:" in cut["letter"].context and "Shot 2:" not in cut["letter"].context
    assert cut["letter"].continuations == (" A", " B", " C", " D")
    assert cut["cloze"].continuations == (" 3", " 4", " 5", " 22")


def results(letter, cloze, next_token=" B"):
    return {"letter": ChoiceResult(tuple(letter), (1,) * 4, (False,) * 4, next_token),
            "cloze": ChoiceResult(tuple(cloze), (1, 1, 1, 2), (False,) * 4, "x")}


def test_mmlu_scorings():
    it = item()  # gold: B ("4")
    m = mmlu.score(it, results([-3, -1, -2, -4], [-5, -4, -6, -9]))
    assert m == {"letter_accuracy": 1.0, "cloze_accuracy": 1.0, "cloze_norm_accuracy": 1.0,
                 "next_char_accuracy": 1.0}
    # normalised by characters (lm-eval's acc_norm): "22" at -7 beats "4" at -4 (-3.5 < -4)
    m = mmlu.score(it, results([-1, -3, -2, -4], [-5, -4, -6, -7], next_token="C"))
    assert (m["letter_accuracy"], m["cloze_accuracy"], m["cloze_norm_accuracy"], m["next_char_accuracy"]) \
        == (0.0, 1.0, 0.0, 0.0)
    m = mmlu.score(it, results([-1] * 4, [-9, -3, -9, -9], next_token=""))
    assert m["cloze_norm_accuracy"] == 1.0 and m["next_char_accuracy"] == 0.0


def test_mmlu_loader_interleaves_subjects_and_attaches_dev_shots(tmp_path):
    def row(subject, i):
        return {"subject": subject, "question": f"{subject} q{i}", "choices": ["a", "b", "c", "d"],
                "answer": i % 4}
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row(s, i)) + "\n"
                                                 for s in ("anatomy", "virology") for i in range(3)))
    (tmp_path / "dev.jsonl").write_text(json.dumps(row("virology", 9)) + "\n")
    items = mmlu.load(tmp_path / "test.jsonl")
    assert [i["subject"] for i in items] == ["anatomy", "virology"] * 3
    assert items[1]["_shots"][0]["question"] == "virology q9" and items[0]["_shots"] == []
    assert items[0]["category"] == "other"
    (tmp_path / "test.jsonl").write_text(json.dumps(dict(row("anatomy", 0), answer=4)) + "\n")
    with pytest.raises(ValueError, match="answer in 0-3"):
        mmlu.load(tmp_path / "test.jsonl")


@pytest.mark.parametrize("output, em, f1, legacy", [
    ("Paris", 1, 1.0, 1),
    ("The city of Paris.\nMore text", 0, 2 / 3, 1),  # first line; "city of" of City of Light
    ("", 0, 0.0, 1),                               # empty: wrong, but legacy counts it
    ("London", 0, 0.0, 0),
    ("paris!", 1, 1.0, 1),                          # punctuation and case
])
def test_icraqa_scores(output, em, f1, legacy):
    m = icraqa.score({"answers": ["Paris", "City of Light"]}, "", output)
    assert m["exact_match"] == em and m["f1"] == pytest.approx(f1, abs=1e-3)
    assert m["two_way_accuracy"] == legacy


def test_token_f1_takes_the_best_alias():
    assert text.token_f1("Neil Armstrong", ["Buzz Aldrin", "Armstrong"]) == pytest.approx(2 / 3)


def test_icraqa_open_and_closed_prompts():
    it = {"context": "Zorbland's capital is Quux.", "question": "What is the capital of Zorbland?",
          "answers": ["Quux"]}
    open_, closed = icraqa.prompt(it, "open"), icraqa.prompt(it, "closed")
    assert open_.endswith("Passage: Zorbland's capital is Quux.\n"
                          "Question: What is the capital of Zorbland?\nAnswer:")
    assert "Quux" not in closed and closed.endswith("Question: What is the capital of Zorbland?\nAnswer:")


def test_mmlu_and_icraqa_in_a_sweep(tiny, store, tmp_path):
    icra = tmp_path / "icra.jsonl"
    icra.write_text("".join(json.dumps({"id": str(i), "context": f"The code word is {w}.",
                                        "question": "What is the code word?", "answers": [w]}) + "\n"
                            for i, w in enumerate(["apple", "river", "stone"])))
    tasks = [TaskSpec("mmlu", limit=6), TaskSpec("icraqa", str(icra)),
             TaskSpec.parse("icraqa:closed", data=str(icra))]
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)], tasks)
    frame = sweep.execute(runs, store, sweep.Settings(device="cpu", dtype="float32", progress=False))
    assert set(frame.task_label) == {"mmlu", "icraqa", "icraqa:closed"}
    got = frame[frame.task == "mmlu"]
    # every scoring, and each compressed point's KL from dense (divergence.py)
    assert set(got.metric) == set(mmlu.SCORINGS.values()) | {"kl"} and set(got.n) == {6}
    assert set(got[got.metric == "kl"].method) == {"magnitude"}
    assert ((got.ci_low <= got.value) & (got.value <= got.ci_high)).all()
    dense = frame[(frame.task == "mmlu") & (frame.method == "dense")].key.iloc[0]
    samples = store.samples(dense)
    assert len(samples) == 6 and "_shots" not in samples.item.iloc[0]
    assert samples.prompt.iloc[0].count("\nAnswer: ") == 5  # the 5 dev shots
    # a second execute computes nothing new: every point comes from the store
    again = sweep.execute(runs, store, sweep.Settings(device="cpu", dtype="float32", progress=False))
    assert again.sort_values(["key", "metric"]).value.tolist() == frame.sort_values(["key", "metric"]).value.tolist()

"""Summarization and instruction following: loaders, prompts, scores, dialogue turns, judging
and the fluency stage in a sweep on a tiny model."""

import json
import math

import pytest

from kickbench import judge as J
from kickbench import posthoc, sweep
from kickbench.compress.spec import CompressionSpec
from kickbench.engine import GenerationConfig
from kickbench.judge import reference
from kickbench.tasks import TaskSpec, instruct, summarize, text

from test_judge import Scripted

SETTINGS = dict(device="cpu", dtype="float32", progress=False, batch_size=8)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_summaries_are_bucketed_like_llmkick_and_interleaved(tmp_path):
    rows = [{"id": "a", "document": "word " * 100, "summary": "s", "llmkick_categories": ["small", "mid"]},
            {"id": "b", "document": "word " * 800, "summary": "s"},
            {"id": "c", "document": "word " * 600, "summary": "s"},
            {"id": "d", "document": "word " * 300, "summary": "s"}]
    items = summarize.load(write(tmp_path / "s.jsonl", rows))
    assert [(i["id"], i["bucket"]) for i in items] == [
        ("a/small", "small"), ("a/mid", "mid"), ("b", "large"), ("d", "small"), ("c", "mid")]
    assert summarize.bucket(470) == "small" and summarize.bucket(471) == "mid" and summarize.bucket(790) == "large"


def test_summary_prompt_holds_the_story_not_the_reference():
    item = {"id": "x", "document": "The mayor opened a bridge.", "reference": "Bridge opened."}
    [msg] = summarize.prompt(item, "chat")
    assert "under 150 words" in msg["content"] and "The mayor opened a bridge." in msg["content"]
    assert "Bridge opened." not in msg["content"]
    assert summarize.prompt(item, "plain").endswith("Summary:")


def test_summary_scores():
    item = {"reference": "The mayor opened a new bridge on Monday."}
    same = summarize.score(item, "", "The mayor opened a new bridge on Monday.")
    assert same["rougeL"] == pytest.approx(1.0) and same["within_limit"] == 1.0
    empty = summarize.score(item, "", "")
    assert empty["rougeL"] == 0.0 and empty["within_limit"] == 0.0 and math.isnan(empty["unique_token_ratio"])
    assert summarize.score(item, "", "word " * 160)["within_limit"] == 0.0
    assert reference.rouge("bridges opening", "bridge opened")["rouge1"] == pytest.approx(1.0)  # stemmed


def test_unique_token_ratio_sees_repetition():
    assert text.unique_token_ratio("the cat sat") == 1.0
    assert text.unique_token_ratio("the the the the") == 0.25


def test_instruct_adapts_vicuna_and_mt_bench_rows_and_expands_turns():
    vic = instruct.adapt({"id": "vicuna-1", "category": "generic", "turns": ["How?"],
                          "reference_gpt35_llmkick": "Like this."}, 0)
    mt = instruct.adapt({"id": "mt-81", "category": "writing", "turns": ["Write.", "Shorter."],
                         "reference": None, "reference_gpt4": ["Long text", "Short"]}, 1)
    assert vic["references"] == ["Like this."] and mt["references"] == ["Long text", "Short"]
    one = instruct.adapt({"turns": ["A?", "B?"], "reference": ["only first"]}, 2)
    assert one["references"] == ["only first", None]
    samples = instruct.expand([vic, mt])
    assert [s["id"] for s in samples] == ["vicuna-1/turn1", "mt-81/turn1", "mt-81/turn2"]
    second = samples[2]
    msgs = instruct.prompt(second, "chat", ["My long text."])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "My long text." and msgs[2]["content"] == "Shorter."
    req = instruct.judge_request(second, " Short one. ", ["My long text."])
    assert req.answer == "Short one." and req.reference == "Short"
    assert "Earlier answer: My long text." in req.material and req.material.endswith("Shorter.")


def test_temperature_is_checked_and_keyed():
    with pytest.raises(ValueError, match="temperature applies to generation tasks"):
        TaskSpec("mmlu", temperature=0.7)
    with pytest.raises(ValueError, match="temperature must be in 0..5"):
        TaskSpec("icsum", temperature=-1)
    assert "temperature" not in GenerationConfig().key()  # greedy keys did not change
    assert sweep.generation_config(TaskSpec("icsum", temperature=0.7)).key()["temperature"] == 0.7


@pytest.fixture
def freeform_data(tmp_path):
    stories = write(tmp_path / "stories.jsonl", [
        {"id": f"s{i}", "document": f"Story {i}: the town of Ardmore opened a library with {i} rooms.",
         "summary": f"Ardmore opened a library with {i} rooms."} for i in range(3)])
    dialogues = write(tmp_path / "dialogues.jsonl", [
        {"id": "d1", "turns": ["Name a colour.", "Another one?"], "reference": ["Blue.", "Red."]},
        {"id": "d2", "turns": ["Say hi."]}])
    return stories, dialogues


def score_by_length(messages):
    """A judge that prefers longer answers: content-based, so both orders agree."""
    import re

    a, b = (re.findall(r"Assistant \d's \w+\]\n(.*?)\n\[The End", messages[-1]["content"], re.S)
            + ["", ""])[:2]
    n = 4 if "Story]" in messages[-1]["content"] else 1
    if "Assistant 2" not in messages[-1]["content"]:  # single grading
        return "\n".join("6" for _ in range(n))
    s = lambda t: 8 if len(t) > 20 else 3
    return "\n".join(f"{s(a)} {s(b)}" for _ in range(n))


def test_summaries_and_dialogues_in_a_judged_sweep(tiny, store, freeform_data):
    stories, dialogues = freeform_data
    judge = Scripted(score_by_length)
    tasks = [TaskSpec("icsum", stories, limit=2), TaskSpec("instruct", dialogues)]
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)], tasks)
    frame = sweep.execute(runs, store, sweep.Settings(**SETTINGS, judge=judge))
    judged = frame[frame.judge == "scripted"]
    assert set(judged.task) == {"icsum", "instruct"} and len(set(judged.key)) == 4
    assert {"coherence", "judge_score", "win_rate", "order_disagreement", "unparsed"} <= set(judged.metric)
    assert set(frame[frame.judge.isna()].metric) >= {"rougeL", "unique_token_ratio"}
    # 2 summaries x 2 orders x 2 models + (2 pairwise turns x 2 orders + 1 single) x 2 models
    assert len(judge.calls) == 8 + 10
    # the second turn saw the model's own first answer
    dense_instruct = frame[(frame.task == "instruct") & frame.judge.isna() & (frame.method == "dense")].key.iloc[0]
    turns = store.samples(dense_instruct)
    assert turns.item_id.tolist() == ["d1/turn1", "d1/turn2", "d2/turn1"]
    assert turns.output[0].strip() and turns.output[0] in turns.prompt[1]
    # everything is stored: a second run asks the judge nothing
    again = sweep.execute(runs, store, sweep.Settings(**SETTINGS, judge=judge))
    assert len(judge.calls) == 18 and len(again) == len(frame)


def test_fluency_stage_scores_answers_with_the_dense_model(tiny, store, tmp_path):
    data = write(tmp_path / "f.jsonl", [{"question": f"Q{i}?", "answers": ["x"]} for i in range(4)])
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("dense"), CompressionSpec("magnitude", 0.6)],
                      [TaskSpec("factoid", data)])
    frame = sweep.execute(runs, store, sweep.Settings(**SETTINGS))
    ppl = frame[frame.metric == "answer_ppl"]
    assert len(ppl) == 2 and (ppl.value > 1).all()
    key = ppl.key.iloc[1]
    samples = store.samples(key)
    manual = math.exp(samples.answer_nll.sum() / samples.answer_tokens.sum())
    assert ppl.value.iloc[1] == pytest.approx(manual, rel=1e-6)
    # the measure is the dense model's: the same answer text gets the same score in either run
    lm = tiny("tiny-llama")  # the same weights the sweep loaded
    from kickbench.engine import Choice, loglikelihood
    from kickbench.tasks import factoid

    item, out = samples.item[0], samples.output[0]
    [r] = loglikelihood(lm.model, lm.tokenizer, [Choice(factoid.fluency_context(item), (out,))])
    assert samples.answer_nll[0] == pytest.approx(-r.logprobs[0], rel=1e-5)


def test_local_judge_runs_a_loaded_model(tiny):
    judge = J.LocalJudge("tiny-llama", scoring="generate", max_new_tokens=4, device="cpu", dtype="float32")
    replies = judge.complete([[{"role": "user", "content": "Rate: 1-10"}]] * 2, J.Layout(1, 2))
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert judge.identity["model"] == judge.lm.fingerprint and judge.label == "local:tiny-llama:generate"
    # the identity generated replies were cached under before expected scoring existed
    assert set(judge.identity) == {"kind", "model", "dtype", "max_new_tokens"}

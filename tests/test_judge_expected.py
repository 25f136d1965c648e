"""Expected-value scoring by a local judge: the maths on small tensors, the cached reading
checked against whole-sequence forward passes, and the protocol around it."""

import pytest
import torch

from kickbench import judge as J
from kickbench.engine import encode
from kickbench.judge import rubric as R
from kickbench.judge.expected import Layout, SheetReader, expected_score, sheet_text


def test_expected_score_splits_one_and_ten():
    assert expected_score(torch.ones(9), 0.0)[0] == pytest.approx(5.0)
    assert expected_score(torch.arange(1.0, 10.0), 0.0) == (pytest.approx(285 / 45), 9)
    assert expected_score(torch.tensor([1.0] + [0] * 8), 1.0) == (pytest.approx(10.0), 10)
    assert expected_score(torch.tensor([1.0] + [0] * 8), 0.0) == (pytest.approx(1.0), 1)
    # "1" and "9" equally likely (unnormalised), half the ones go on to "10"
    two = torch.tensor([3.0] + [0] * 7 + [3.0])
    assert expected_score(two, 0.5) == (pytest.approx(0.25 * 1 + 0.5 * 9 + 0.25 * 10), 9)


def test_sheet_text_reads_back_through_the_rubric_parser():
    sheet = [[(7.25, 7), (10.0, 10)], [(1.0, 1), (4.999, 5)], [(9.996, 10), (2.5, 2)], [(3.0, 3), (3.0, 3)]]
    assert R.parse(sheet_text(sheet), R.SUMMARY, True) == [(7.25, 10), (1, 5.0), (10, 2.5), (3, 3)]
    assert "most likely: 7 10, 1 5, 10 2, 3 3" in sheet_text(sheet)


def _brute_force(lm, prompt, layout, first_sep):
    """Every score from a whole-sequence forward pass (no cache), following the greedy path."""
    tok, model = lm.tokenizer, lm.model
    digit = [tok.encode(d, add_special_tokens=False)[0] for d in "1234567890"]
    ids = encode(tok, [prompt])[0] + tok.encode(first_sep, add_special_tokens=False)
    sheet = []

    def last(seq):
        with torch.inference_mode():
            return model(input_ids=torch.tensor([seq])).logits[0, -1].softmax(-1)

    for line in range(layout.lines):
        row = []
        for k in range(layout.per_line):
            score, best = expected_score(last(ids)[digit[:9]], float(last(ids + [digit[0]])[digit[9]]))
            row.append((score, best))
            sep = " " if k + 1 < layout.per_line else "\n"
            ids = ids + ([digit[0], digit[9]] if best == 10 else [digit[best - 1]])
            ids += tok.encode(sep, add_special_tokens=False)
        sheet.append(row)
    return sheet


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])  # gemma3: sliding-window cache
def test_cached_reading_equals_whole_sequence_passes(tiny, name):
    lm = tiny(name)
    story = "The council voted on Tuesday to rebuild the old bridge over the river. " * 4
    # two orders of one judgment share the story: the reader encodes it once
    prompts = [[{"role": "user", "content": f"[Story]\n{story}\n[Summary 1]\n{a}\n[Summary 2]\n{b}"}]
               for a, b in (("bridge rebuilt", "vote held"), ("vote held", "bridge rebuilt"))]
    layout = Layout(2, 2)
    sheets = SheetReader(lm.model, lm.tokenizer).read(prompts, layout)
    for prompt, sheet in zip(prompts, sheets):
        expected = _brute_force(lm, prompt, layout, "")
        assert [[g for _, g in row] for row in sheet] == [[g for _, g in row] for row in expected]
        assert [[s for s, _ in row] for row in sheet] == [[pytest.approx(s, abs=1e-4) for s, _ in row]
                                                         for row in expected]
    # a plain-text prompt (base model) starts its first score after a space
    plain = "Rate the answer from 1 to 10.\n\nAssistant:"
    [sheet] = SheetReader(lm.model, lm.tokenizer, first_separator=" ").read([plain], Layout(1, 1))
    assert sheet[0][0][0] == pytest.approx(_brute_force(lm, plain, Layout(1, 1), " ")[0][0][0], abs=1e-4)


def test_local_judge_scores_every_judgment(tiny, store, monkeypatch):
    judge = J.LocalJudge("tiny-llama", device="cpu", dtype="float32")
    judge._lm = tiny("tiny-llama")
    reqs = [J.Request("A story about a bridge.", "bridge", "The council rebuilt the bridge."),
            J.Request("A story about a vote.", "", "The council voted.")]
    verdicts = J.assess(judge, R.SUMMARY, reqs, store)
    for v in verdicts:
        assert v.unparsed == 0 and v.disagreement in (0.0, 1.0) and len(v.replies) == 2
        assert all(1 <= s <= 10 for s in [*v.scores.values(), *v.reference_scores.values()])
    single = J.assess(judge, R.GENERAL, [J.Request("What is 2+2?", "4")], store)[0]
    assert single.unparsed == 0 and 1 <= single.scores["overall"] <= 10
    assert judge.identity["scoring"] == "expected" and judge.label == "local:tiny-llama"
    # cached in the store: the same judgments again never reach the model
    monkeypatch.setattr(J.LocalJudge, "complete", lambda *a: pytest.fail("judge called again"))
    assert J.assess(judge, R.SUMMARY, reqs, store) == verdicts


def test_scoring_choices_are_checked():
    with pytest.raises(ValueError, match="judge scoring 'logits': use one of expected, generate"):
        J.LocalJudge("tiny-llama", scoring="logits")
    with pytest.raises(ValueError, match="needs a local judge"):
        J.from_spec("http://127.0.0.1:1/v1", model="m", scoring="expected")
    assert J.from_spec("local:tiny-llama").scoring == "expected"
    assert J.from_spec("local:tiny-llama", scoring="generate").scoring == "generate"

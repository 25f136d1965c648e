import math

import pytest
import torch

from kickbench import sweep
from kickbench.compress.spec import CompressionSpec
from kickbench.engine import iter_window_nll
from kickbench.tasks import TaskSpec, perplexity


def test_window_nll_matches_the_model_loss(tiny):
    lm = tiny("tiny-llama")
    wins = [list(range(100, 132)), list(range(200, 220))]  # unequal lengths: padding
    out = [r for batch in iter_window_nll(lm.model, wins, batch_size=2, progress=False) for r in batch]
    for (i, nll, tokens), w in zip(out, wins):
        with torch.no_grad():
            loss = lm.model(input_ids=torch.tensor([w]), labels=torch.tensor([w])).loss.item()
        assert tokens == len(w) - 1
        assert nll / tokens == pytest.approx(loss, rel=1e-4)


def test_windows_are_non_overlapping_and_full(tiny):
    tok = tiny("tiny-llama").tokenizer
    wins = perplexity.windows(tok, [{"id": "t", "text": "word " * 1000}], window=64)
    assert all(len(w["ids"]) == 64 and w["skip"] == 0 for w in wins)
    ids = tok("word " * 1000, add_special_tokens=False)["input_ids"]
    assert sum((w["ids"] for w in wins), []) == ids[:64 * len(wins)]


def test_sliding_windows_score_each_token_once_with_more_context(tiny):
    """Stride 16 in windows of 64: the NLL of every scored token equals a direct computation
    of that token with up to 63 tokens of context, and no token is scored twice."""
    lm = tiny("tiny-llama")
    text = " ".join(f"w{i % 37}" for i in range(150))
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    wins = perplexity.windows(lm.tokenizer, [{"id": "t", "text": text}], window=64, stride=16)
    out = [r for b in iter_window_nll(lm.model, [w["ids"] for w in wins], 4, progress=False,
                                      skips=[w["skip"] for w in wins]) for r in b]
    starts = [i * 16 for i in range(len(wins))]
    assert [w["ids"] for w in wins] == [ids[s:s + 64] for s in starts]
    assert sum(t for _, _, t in out) == starts[-1] + 63  # targets 1..last, once each
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids[32:96]])).logits[0].float(), -1)
    last16 = -sum(logp[t, ids[32 + t + 1]].item() for t in range(47, 63))
    assert out[2][1] == pytest.approx(last16, rel=1e-4) and out[2][2] == 16


def test_default_window_is_the_models_context_up_to_2048(tiny):
    lm = tiny("tiny-llama")
    assert perplexity.default_window(lm.model.config) == min(lm.model.config.max_position_embeddings, 2048)
    with pytest.raises(ValueError, match="stride"):
        TaskSpec("perplexity", window=64, stride=65)
    with pytest.raises(ValueError, match="perplexity task"):
        TaskSpec("factoid", window=64)


def test_perplexity_task_in_a_sweep(tmp_path, store):
    text = tmp_path / "t.txt"
    text.write_text("The cat sat on the mat. The dog ate the bone. " * 200)
    task = TaskSpec("perplexity", data=str(text), limit=3)
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)],
                      [task])
    frame = sweep.execute(runs, store, sweep.Settings(device="cpu", dtype="float32", progress=False))
    ppl = frame.set_index("method")
    assert set(frame.metric) == {"perplexity"} and set(frame.n) == {3}
    for _, r in frame.iterrows():
        assert r.ci_low <= r.value <= r.ci_high and r.value > 1
    assert math.isfinite(ppl.loc["magnitude", "value"])

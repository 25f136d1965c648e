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
    assert all(len(w) == 64 for w in wins)
    ids = tok("word " * 1000, add_special_tokens=False)["input_ids"]
    assert sum(wins, []) == ids[:64 * len(wins)]


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

"""KL(dense || compressed) of next-token distributions (issue 17, kickbench/divergence.py):
the formula on small arrays, the batched pass against one forward per prompt, and a tiny sweep
whose stored per-item KL equals a direct computation with the dense and compressed weights."""

import json

import numpy as np
import pytest
import torch

from kickbench import compress, divergence, results, sweep, versions
from kickbench.compress.spec import CompressionSpec
from kickbench.tasks import TaskSpec, metric

SETTINGS = dict(progress=False, dtype="float32", batch_size=4)


def test_kl_of_small_arrays_is_the_definition():
    p = np.array([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4]])
    q = np.array([[0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1]])
    direct = [sum(pi * np.log(pi / qi) for pi, qi in zip(pr, qr) if pi > 0) for pr, qr in zip(p, q)]
    with np.errstate(divide="ignore"):
        got = divergence.kl(torch.tensor(np.log(p)), torch.tensor(np.log(q)))
    assert got.tolist() == pytest.approx(direct)
    same = torch.log_softmax(torch.randn(3, 7), -1)
    assert divergence.kl(same, same).abs().max() < 1e-6  # KL of a distribution with itself
    # mass where the compressed model puts none: infinite, as it is
    assert divergence.kl(torch.log(torch.tensor([[0.5, 0.5]])),
                         torch.log(torch.tensor([[1.0, 0.0]]))).item() == float("inf")
    assert not metric("kl").higher_is_better


def _alone(model, ids):
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]))
    return torch.log_softmax(out.logits[0, -1].float(), -1)


def test_batched_pass_equals_one_forward_per_prompt(tiny):
    lm = tiny("tiny-llama")
    shared = list(range(5, 25))  # a common preamble: encoded once, its KV cache shared
    ctxs = [shared + [30 + i] * (1 + i % 3) for i in range(5)] + [[7, 8, 9], [3] * 11]
    seen = {}
    for idx, logp in divergence.iter_logprobs(lm.model, ctxs, 0, batch_size=3):
        for i, row in zip(idx, logp):
            seen[i] = row
    assert sorted(seen) == list(range(len(ctxs)))
    for i, ids in enumerate(ctxs):
        assert torch.allclose(seen[i], _alone(lm.model, ids), atol=1e-4)


@pytest.fixture
def tasks(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus one?",
                                      "answers": [str(i + 1)]}) + "\n" for i in range(5)))
    return [TaskSpec("factoid", data=str(qa)), TaskSpec("mmlu", template="0-shot", limit=4)]


def test_a_sweep_stores_kl_from_dense_and_pairs_it(tiny, store, tasks):
    specs = [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)]
    runs = sweep.plan(["tiny-llama"], specs, tasks)
    # first without KL (as a store made before it), then the same command adds only KL
    sweep.execute(runs, store, sweep.Settings(limit=5, divergence=False, **SETTINGS))
    frame = results.frame(store)
    assert "kl" not in set(frame.metric)
    sweep.execute(runs, store, sweep.Settings(limit=5, **SETTINGS))
    frame = results.frame(store)
    kl_rows = frame[frame.metric == "kl"]
    assert set(kl_rows.method) == {"magnitude"} and set(kl_rows.task) == {"factoid", "mmlu"}

    lm = tiny("tiny-llama")
    for task in tasks:
        key = kl_rows[kl_rows.task == task.name].key.iloc[0]
        samples = store.samples(key)
        items = task.module.load(task.data)[:len(samples)]
        ctxs = divergence.contexts(lm.tokenizer, task, items)
        dense = [_alone(lm.model, ids) for ids in ctxs]
        with compress.compressed(lm, CompressionSpec("magnitude", 0.5)) as (clm, _):
            comp = [_alone(clm.model, ids) for ids in ctxs]
        direct = [float((d.exp() * (d - c)).sum()) for d, c in zip(dense, comp)]
        assert samples.sort_values("idx").kl.tolist() == pytest.approx(direct, rel=1e-3, abs=1e-5)
        assert min(direct) > 0
        meta = store.run(key)["meta"]["kl"]
        assert meta["version"] == versions.DIVERGENCE and meta["definition"] == divergence.DEFINITION
        dense_key = frame[(frame.method == "dense") & (frame.task == task.name)].key.iloc[0]
        assert meta["dense_key"] == dense_key
        score = store.scores(key, len(samples))["kl"]
        assert score[0] == pytest.approx(np.mean(direct), rel=1e-3)

    pf = results.paired_frame(store, frame)
    assert pf.kl.notna().all() and "kl" not in set(pf.metric)  # a column of each pair, not a pair
    by_task = pf.drop_duplicates("task").set_index("task")
    for task, row in by_task.iterrows():
        key = row.key
        assert row.kl == pytest.approx(store.samples(key).kl.mean())
        assert row.kl_low <= row.kl <= row.kl_high and row.kl_items == len(store.samples(key))

    # the workbench's results table shows flips and KL beside the paired difference
    from kickbench.ui import results_table

    table = results_table(frame[frame.metric == "accuracy"], store)
    cell = table[table.label == "magnitude 50%"].filter(like="factoid accuracy").iloc[0, 0]
    kl = by_task.kl["factoid"]
    assert "Δ" in cell and " · flips " in cell and cell.endswith(f" · KL {kl:.3g}")
    assert " · KL" not in table[table.label == "dense"].filter(like="factoid").iloc[0, 0]

    # a rerun computes nothing: the stored KL (and its provenance) stay as they are
    before = [store.provenance(k) for k in kl_rows.key]
    sweep.execute(runs, store, sweep.Settings(limit=5, **SETTINGS))
    assert [store.provenance(k) for k in kl_rows.key] == before


def test_dialogues_and_dense_runs_have_no_kl():
    assert not divergence.applies(TaskSpec("instruct"))
    assert not divergence.applies(TaskSpec("perplexity"))
    assert divergence.applies(TaskSpec("icraqa", template="llmkick"))

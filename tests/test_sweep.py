import json

import pytest

from kickbench import engine, results, runners, sweep
from kickbench.compress.spec import CompressionSpec
from kickbench.session import Session
from kickbench.tasks import TaskSpec

SPECS = [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)]


@pytest.fixture
def small_data(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"id": f"q{i}", "question": f"What is {i} plus one?", "answers": [str(i + 1)]}
            for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskSpec("factoid", data=str(path))


def count_prompts(monkeypatch):
    seen = []
    real = engine.iter_generate

    def spy(model, tok, prompts, *a, **k):
        seen.extend(prompts)
        yield from real(model, tok, prompts, *a, **k)

    monkeypatch.setattr(runners, "iter_generate", spy)
    return seen


def settings(**kw):
    return sweep.Settings(device="cpu", dtype="float32", batch_size=4, progress=False, **kw)


def test_plan_validates_before_any_work_and_puts_dense_first():
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("magnitude", 0.3),
                                       CompressionSpec("magnitude", 0.0)], ["factoid"])
    assert [r.spec.method for r in runs] == ["dense", "magnitude"]
    with pytest.raises(ValueError, match="unknown model"):
        sweep.plan(["nope"], SPECS, ["factoid"])
    with pytest.raises(ValueError, match="unknown compression method"):
        sweep.plan(["tiny-llama"], [CompressionSpec("wandaa", 0.5)], ["factoid"])


def test_results_are_stored_and_never_recomputed(store, small_data, monkeypatch):
    seen = count_prompts(monkeypatch)
    runs = sweep.plan(["tiny-llama"], SPECS, [small_data])
    first = sweep.execute(runs, store, settings(limit=6))
    assert len(seen) == 12
    # every scoring, the dense model's perplexity of the answers (the fluency stage), and the
    # compressed point's KL from dense (divergence.py)
    assert set(first.metric) == {"accuracy", "exact_match", "haystack_accuracy", "answer_ppl", "kl"}
    assert set(first.n) == {6} and len(first) == 9  # 2 runs x 4 metrics + the compressed run's KL
    again = sweep.execute(runs, store, settings(limit=6))
    assert len(seen) == 12  # nothing generated the second time
    assert again.sort_values(["key", "metric"]).value.tolist() == \
        first.sort_values(["key", "metric"]).value.tolist()
    # a larger limit only generates the new items
    sweep.execute(runs, store, settings(limit=10))
    assert len(seen) == 12 + 8


def test_interrupted_run_resumes_without_losing_finished_batches(store, small_data, monkeypatch):
    seen = count_prompts(monkeypatch)
    real = engine.iter_generate

    def dies_after_first_batch(*a, **k):
        gen = real(*a, **k)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(runners, "iter_generate", dies_after_first_batch)
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("dense")], [small_data])
    with pytest.raises(KeyboardInterrupt):
        sweep.execute(runs, store, settings(limit=10))
    key = results.frame(store).key.tolist() or [r[0] for r in store.db.execute("SELECT key FROM runs")]
    assert len(store.done_indices(key[0])) == 4  # the finished batch was kept
    seen = count_prompts(monkeypatch)
    out = sweep.execute(runs, store, settings(limit=10))
    assert len(seen) == 6 and set(out.n) == {10}


def test_key_changes_with_everything_that_changes_a_number(small_data, tiny):
    lm = tiny("tiny-llama")
    session = Session()
    items, h = session.items(small_data)
    base, _ = sweep.run_key(lm, CompressionSpec("dense"), small_data, h, 0, session)
    chat = TaskSpec("factoid", data=small_data.data, template="chat")
    assert base != sweep.run_key(lm, CompressionSpec("magnitude", 0.1), small_data, h, 0, session)[0]
    assert base != sweep.run_key(lm, CompressionSpec("dense"), chat, h, 0, session)[0]
    assert base != sweep.run_key(lm, CompressionSpec("dense"), small_data, "other", 0, session)[0]
    assert base != sweep.run_key(lm, CompressionSpec("dense"), small_data, h, 1, session)[0]
    assert base == sweep.run_key(lm, CompressionSpec("dense"), small_data, h, 0, session)[0]


def test_run_metadata_and_changed_answers(store, small_data):
    from kickbench.results import changed_answers

    runs = sweep.plan(["tiny-llama"], SPECS, [small_data])
    frame = sweep.execute(runs, store, settings(limit=5))
    keys = frame.drop_duplicates("key").set_index("method").key
    meta = store.run(keys["magnitude"])["meta"]
    assert meta["compression"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert meta["weights"]["nonzero"] < meta["weights"]["params"]
    assert meta["key_fields"]["seed"] == 0 and meta["template"] == "fewshot"
    samples = store.samples(keys["dense"], 5)
    assert len(samples) == 5 and {"output", "prompt", "accuracy"} <= set(samples.columns)
    diff = changed_answers(store, keys["dense"], keys["magnitude"], 5)
    assert list(diff.columns) == ["question", "gold", "dense answer", "compressed answer",
                                  "dense answer ppl", "compressed answer ppl"]
    assert (diff["compressed answer ppl"] > 0).all()

"""The workbench driven in plain Python: set .value, click, assert on the figure and the panel."""

import json

import pytest

from kickbench import engine, models, sweep
from kickbench.compress.spec import CompressionSpec
from kickbench.tasks import TaskSpec, factoid
from kickbench.ui import Workbench


@pytest.fixture
def qa(tmp_path, tiny):
    """Questions whose gold answers are the dense tiny model (one that answers varied text)'s own answers: dense scores 1.0,
    so every answer pruning changes shows up in the what-changed view."""
    questions = [f"What is {i} plus one?" for i in range(6)]
    lm = tiny("tiny-mistral")
    prompts = [factoid.prompt({"question": q}) for q in questions]
    config = factoid.GENERATION
    answers = {}
    for batch in engine.iter_generate(lm.model, lm.tokenizer, prompts, config, progress=False):
        answers.update({i: g.text for i, g in batch})
    rows = [{"id": f"q{i}", "question": q, "answers": [answers[i].strip() or "?"]}
            for i, q in enumerate(questions)]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def bench(store, qa=None, **kw):
    kw = {"model": "tiny-mistral", "tasks": ("factoid",), "limit": 6, "store": store,
          "data": {"factoid": qa} if qa else None, "batch_size": 2, "device": "cpu",
          "dtype": "float32", **kw}
    return Workbench(**kw)


def test_level_control_fits_the_method(store):
    wb = bench(store)
    assert wb.method.options == ("magnitude", "wanda", "sparsegpt")
    assert wb.sparsity.layout.display is None and wb.bits.layout.display == "none"
    wb.pattern.value = "2:4"
    assert wb.sparsity.disabled and wb.spec() == CompressionSpec("wanda", pattern="2:4",
                                                                 calibration=wb.calibration)
    wb.family.value = "quantization"
    assert wb.method.options == ("rtn", "gptq", "awq", "bnb-int8", "bnb-nf4", "bnb-fp4")
    wb.method.value = "rtn"
    assert wb.bits.layout.display is None and wb.sparsity.layout.display == "none"
    wb.bits.value, wb.group_size.value = 3, 64
    assert wb.spec() == CompressionSpec("rtn", bits=3, group_size=64)
    wb.method.value = "bnb-nf4"
    assert wb.fixed.layout.display is None and wb.bits.layout.display == "none"
    assert wb.spec() == CompressionSpec("bnb-nf4")
    wb.tasks.value = ("factoid", "perplexity")
    assert [t.name for t in wb.task_specs()] == ["factoid", "perplexity"]
    assert wb.task_specs()[1].limit == wb.ppl_windows


def test_run_draws_the_curve_table_and_what_changed_and_rerun_is_instant(store, qa):
    wb = bench(store, qa)
    wb.method.value, wb.sparsity.value = "magnitude", 0.6
    wb.run_button.click()
    assert wb.run_button.disabled and not wb.cancel_button.disabled
    wb.wait(300)
    assert wb.error is None, wb.status.value
    assert wb.status.value.startswith("done: magnitude 60%")
    names = [t.name for t in wb.figure.data]
    assert "magnitude unstructured" in names and "dense" in names
    curve = next(t for t in wb.figure.data if t.name == "magnitude unstructured")
    assert list(curve.x) == [0.0, 0.6]  # the dense point anchors the curve
    assert curve.y[0] == 1.0  # dense answers its own answers
    assert "magnitude 60%" in wb.table.value and "factoid accuracy (n=6)" in wb.table.value
    lost = wb._changed()
    assert curve.y[1] < 1.0 and len(lost) == round(6 * (1 - curve.y[1]))
    assert (lost["gold"] == lost["dense answer"].str.strip()).all()  # gold: what dense said
    assert (lost["dense answer"] != lost["compressed answer"]).all()
    assert wb.progress.value == wb.progress.max
    assert not wb.run_button.disabled and wb.cancel_button.disabled

    calls = []
    wb2 = bench(store, qa)
    wb2.method.value, wb2.sparsity.value = "magnitude", 0.6
    wb2._on_progress = lambda *a: calls.append(a)  # nothing may be evaluated again
    wb2.run()
    wb2.wait(60)
    assert calls == [] and wb2.status.value.startswith("done")
    assert [t.name for t in wb2.figure.data] == names


def test_bad_input_is_reported_in_the_panel_before_any_work(store, tmp_path):
    wb = bench(store)
    wb.model.value = str(tmp_path / "missing.gguf")
    wb.run_button.click()
    assert wb._thread is None and "missing.gguf" in wb.status.value and "error" in wb.status.value
    wb.model.value = "tiny-mistral"
    wb.tasks.value = ()
    wb.run()
    assert "pick at least one task" in wb.status.value
    with pytest.raises(ValueError, match="unknown workbench task"):
        bench(store, tasks=("factoid", "trivia"))


def test_failure_inside_the_run_reaches_the_panel_and_frees_the_buttons(store):
    wb = bench(store)
    wb.family.value, wb.method.value = "quantization", "bnb-int8"
    wb.run()
    wb.wait(300)
    assert "error" in wb.status.value and "safetensors" in wb.status.value
    assert not wb.run_button.disabled and wb.cancel_button.disabled


def test_cancel_stops_after_the_batch_in_flight_and_keeps_it(store, qa):
    wb = bench(store, qa, batch_size=1)
    wb.method.value, wb.sparsity.value = "magnitude", 0.3
    wb.progress.observe(lambda ch: wb.cancel() if ch["new"] >= 1 else None, "value")
    wb.run_button.click()
    wb.wait(300)
    assert wb.status.value.startswith("cancelled") and wb.error is None
    dense = sweep.plan(["tiny-mistral"], [CompressionSpec("dense")],
                       [TaskSpec("factoid", data=qa)])[0]
    key, _ = sweep.run_key(wb.session.model("tiny-mistral", "cpu", "float32"), dense.spec, dense.task,
                           wb.session.items(dense.task)[1], 0, wb.session)
    assert len(store.done_indices(key)) == 1  # the one finished batch, stored
    assert not wb.run_button.disabled
    wb.progress.unobserve_all()
    wb.run()  # resumes: the rest of dense, then the pruned point
    wb.wait(300)
    assert wb.status.value.startswith("done") and len(store.done_indices(key)) == 6


def test_two_workbenches_at_once_each_prune_their_own_model(store, tmp_path):
    """Models belong to a workbench's session and are pruned in place: two workbenches running
    at once never see each other's pruned weights."""
    from kickbench.store import Store

    a, b = bench(store, limit=2), bench(Store(tmp_path / "other.sqlite"), limit=2)
    a.method.value, b.method.value = "magnitude", "magnitude"
    a.sparsity.value, b.sparsity.value = 0.5, 0.3
    a.run()
    b.run()
    a.wait(300)
    b.wait(300)
    assert a.status.value.startswith("done") and b.status.value.startswith("done")
    dense = [w.results[(w.results.label == "dense") & (w.results.metric == "accuracy")].value.iloc[0]
             for w in (a, b)]
    assert dense[0] == dense[1]  # b's dense run saw dense weights, not a's pruned ones
    for w in (a, b):
        lm = w.session.model("tiny-mistral", "cpu", "float32")
        assert models.weights_fingerprint(lm.model) == lm.weights_fingerprint  # dense weights restored
    assert a.session.model("tiny-mistral", "cpu", "float32") is not b.session.model("tiny-mistral", "cpu", "float32")

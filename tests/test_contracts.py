"""The contracts end to end: a compressor and a task defined in this file alone run through
the CLI, a sweep and a chart; a session frees what it loaded."""

import gc
import json
import types
import weakref

import pytest

from kickbench import config, plots, results, sweep, tasks
from kickbench.cli import main
from kickbench.compress import registry
from kickbench.compress.layers import target_linears, weight_matrix
from kickbench.compress.spec import GRID_FIELDS, check_grid
from kickbench.engine import GenerationConfig
from kickbench.session import Session
from kickbench.store import Store
from kickbench.tasks.metrics import Metric


def toy_quantize(model, spec, calibration=None, layer_spec=None):
    """Round every weight to a multiple of 2^-toy_step (a toy fixed-point quantizer)."""
    step = 2.0 ** -spec.option("toy_step")
    for _, module in target_linears(model):
        w = weight_matrix(module)
        w.copy_((w / step).round() * step)
    return {name: {"bits": spec.bits} for name, _ in target_linears(model)}


def toy_task(data_path):
    """A generation task: echo a word; right when the output contains it."""
    return types.SimpleNamespace(
        NAME="echo", VERSION=1, KIND="generate", DEFAULT_DATA=data_path,
        GENERATION=GenerationConfig(max_new_tokens=3, stop=("\n",)),
        TEMPLATES={"plain": "Repeat: {word}\n"}, DEFAULT_TEMPLATE="plain",
        SCORINGS={"hit": "echo_hit"}, HEADLINE="echo_hit",
        METRICS=(Metric("echo_hit", "echoed the word", binary=True),),
        load=lambda source=None: [json.loads(line) for line in open(source or data_path)],
        prompt=lambda item, template="plain": f"Repeat: {item['word']}\n",
        score=lambda item, prompt, output: {"echo_hit": float(item["word"] in output)})


@pytest.fixture
def toys(monkeypatch, tmp_path):
    data = tmp_path / "echo.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "word": w}) + "\n"
                            for i, w in enumerate(["apple", "river", "stone"])))
    method = registry.Method("toy-fixed", "quantization", "bits", "fixed-point rounding",
                             apply=toy_quantize, fields=GRID_FIELDS, check=check_grid,
                             options=(registry.Option("toy_step", 5, "fractional bits"),))
    monkeypatch.setitem(registry.METHODS, method.name, method)
    monkeypatch.setitem(tasks.TASKS, "echo", toy_task(str(data)))
    return data


def test_a_toy_compressor_and_task_run_through_the_cli_a_sweep_and_a_chart(toys, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    argv = ["eval", "--model", "tiny-llama", "--method", "toy-fixed", "--bits", "4", "--toy-step",
            "3", "--task", "echo", "--store", str(store), "--device", "cpu", "--dtype", "float32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "toy-fixed w4 per-channel" in out and "echo_hit" in out
    frame = results.frame(Store(store))
    toy = frame[frame.method == "toy-fixed"]
    # a generation task: the compressed point also gets its KL from dense (divergence.py)
    assert set(toy.metric) == {"echo_hit", "kl"} and set(toy.n) == {3}
    fig = plots.small_multiples(frame, [("echo", "echo_hit")], x="size_fraction")
    assert fig.layout.annotations[0].text == "echo: echoed the word"  # the task's metric title
    assert {t.name for t in fig.data} >= {"toy-fixed per-channel"}
    # the CLI refuses the toy method's option on another method, before any model loads
    assert main([*argv[:4], "magnitude", "--sparsity", "0.3", *argv[7:]]) == 2
    assert "takes no option 'toy_step'" in capsys.readouterr().err


def test_the_report_plan_offers_a_registered_method_with_its_option(toys):
    params = {k: None for k in config.REPORT_PARAMETERS}
    params.update(model="tiny-llama", methods=["toy-fixed", "magnitude"], sparsities=[0.5],
                  patterns=[], bits=[4, 3], symmetric=False, partial_groups=False, options={"toy_step": 2},
                  tasks=["echo"], data={}, task_limits={}, nsamples=2, seqlen=16, ppl_windows=0,
                  batch_size=8, seed=0, progress=False)
    plan = config.report_plan(params)
    labels = [r.spec.label for r in plan.runs]
    assert labels == ["dense", "toy-fixed w4 per-channel", "toy-fixed w3 per-channel", "magnitude 50%"]
    assert plan.runs[1].spec.option("toy_step") == 2 and plan.runs[3].spec.options == ()
    assert [t.name for t in plan.tasks] == ["echo"]  # ppl_windows=0: no perplexity


def test_switching_models_frees_the_previous_one_and_close_frees_all(tiny):
    session = Session(max_models=1)
    first = weakref.ref(session.model("tiny-llama", "cpu", "float32").model)
    session.items(tasks.TaskSpec("factoid"))
    session.model("tiny-mistral", "cpu", "float32")
    gc.collect()
    assert first() is None and session.loaded() == ["tiny-mistral"]
    second = weakref.ref(session.model("tiny-mistral", "cpu", "float32").model)
    session.close()
    gc.collect()
    assert second() is None and session.loaded() == [] and not session._items


def test_a_sweep_without_a_session_keeps_nothing_loaded(tmp_path):
    runs = sweep.plan(["tiny-llama"], [config.spec("dense")], [tasks.TaskSpec("factoid", limit=2)])
    seen = []
    real = Session.model

    def spy(self, *a, **k):
        lm = real(self, *a, **k)
        seen.append(weakref.ref(lm.model))
        return lm

    import unittest.mock

    with unittest.mock.patch.object(Session, "model", spy):
        sweep.execute(runs, Store(tmp_path / "s.sqlite"),
                      sweep.Settings(device="cpu", dtype="float32", progress=False))
    gc.collect()
    assert seen and all(ref() is None for ref in seen)

"""Inputs refused before any work: a catalogue of bad inputs across eval, compress, report,
findings, app and lab. Each is refused with exit code 2 and one line on stderr that names the
bad value, and no model is loaded (a tokenizer may be read from its folder to count tokens)."""

import json
import os

import pytest

from kickbench import config, models, report, sweep, validate
from kickbench.cli import main
from kickbench.compress.calibration import CalibrationSpec
from kickbench.tasks import TaskSpec
from kickbench.tasks.data import PROJECT_DATA

FILES = {
    "bad_json.jsonl": '{"question": "Q?", "answers": ["a"]}\nnot json\n',
    "answers_int.jsonl": '{"question": "Q?", "answers": 5}\n',
    "question_int.jsonl": '{"question": 7, "answers": ["a"]}\n',
    "empty.jsonl": "",
    "list_row.jsonl": "[1, 2]\n",
    "no_question.jsonl": '{"answers": ["a"]}\n',
    "mmlu3.jsonl": '{"subject": "x", "question": "Q?", "choices": ["a", "b", "c"], "answer": 0}\n',
    "icraqa_ctx.jsonl": '{"context": 5, "question": "Q?", "answers": ["a"]}\n',
    "icsum_doc.jsonl": '{"document": [1], "summary": "s"}\n',
    "instruct_str.jsonl": '{"turns": "hi"}\n',
    "short.txt": "Too short.",
    "ppl_notext.jsonl": '{"title": "x"}\n',
    "calib_notext.jsonl": '{"title": "x"}\n',
    "notsqlite.sqlite": "hello, not a database",
    "afile.txt": "a file",
    "notamodel/weights.bin": "x",
    "stuff/notes.txt": "not a model",
}
DIRS = ("folder", "readonly_dir")

E = ["eval", "--model", "tiny-llama", "--store", "{tmp}/s.sqlite"]
C = ["compress", "--model", "tiny-llama", "--out", "{tmp}/out"]
R = ["report", "--model", "tiny-llama", "--out", "{tmp}/reports", "--store", "{tmp}/s.sqlite"]
F = ["findings", "--out", "{tmp}/reports", "--store", "{tmp}/s.sqlite"]
ICSUM = ["--task", "icsum"]
HTTP_REMOTE = ["--judge", "http://judge.example.com/v1", "--judge-model", "m",
               "--judge-key-env", "KB_UNSET_KEY"]


@pytest.fixture(autouse=True)
def _online_unless_a_case_says_offline(monkeypatch):
    """CI runs with HF_HUB_OFFLINE=1; the cases that need it set it themselves (`offline`)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def offline(mp, tmp):
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_HOME", f"{tmp}/hf")  # an empty cache
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        mp.delenv(var, raising=False)


def unreachable(mp, tmp):
    def fail(repo, kind):
        raise ConnectionError("Name or service not known")
    mp.setattr(validate, "hub_repo_info", fail)


class RepositoryNotFoundError(Exception):
    """Named like huggingface_hub's (validate sorts the hub's errors by class name)."""


def not_on_hub(mp, tmp):
    def fail(repo, kind):
        raise RepositoryNotFoundError(repo)
    mp.setattr(validate, "hub_repo_info", fail)


def unwritable(mp, tmp):
    real = os.access
    mp.setattr(validate.os, "access", lambda p, mode: False if "readonly_dir" in str(p) else real(p, mode))


# (argv, a fragment of the one-line message: it names the bad value[, setup(monkeypatch, tmp)])
CATALOGUE = [
    # ---- eval: numbers, device, dtype
    (E + ["--limit", "-5"], "limit must be a positive number of items, got -5"),
    (E + ["--limit", "0"], "limit must be a positive number of items, got 0"),
    (E + ["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (E + ["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (E + ["--device", "bogus"], "unknown device 'bogus'; allowed: cpu, cuda, cuda:N, mps"),
    (E + ["--device", "cuda:99"], "device 'cuda:99'"),
    (E + ["--dtype", "float64"], "unknown dtype 'float64'; allowed: float32"),
    (E + ["--temperature", "9"], "temperature must be in 0..5, got 9.0"),
    # ---- eval: task data
    (E + ["--data", "{tmp}/missing.jsonl"], "factoid data not found: {tmp}/missing.jsonl"),
    (E + ["--data", "{tmp}/bad_json.jsonl"], "{tmp}/bad_json.jsonl:2: not valid JSON"),
    (E + ["--data", "{tmp}/answers_int.jsonl"],
     "answers_int.jsonl:1: field 'answers' must be a list of strings, got int 5"),
    (E + ["--data", "{tmp}/question_int.jsonl"],
     "question_int.jsonl:1: field 'question' must be a string, got int 7"),
    (E + ["--data", "{tmp}/empty.jsonl"], "factoid data {tmp}/empty.jsonl is empty"),
    (E + ["--data", "{tmp}/list_row.jsonl"], "list_row.jsonl:1: expected a JSON object"),
    (E + ["--data", "{tmp}/no_question.jsonl"], "no_question.jsonl:1: factoid row lacks field(s) 'question'"),
    (E + ["--data", "mydata"], "factoid data 'mydata': no such file, and not a Hugging Face dataset id"),
    (E + ["--data", "someone/some-dataset"],
     "'someone/some-dataset' is a Hugging Face dataset id, not a local file, and HF_HUB_OFFLINE=1", offline),
    (E + ["--data", "someone/some-dataset"],
     "factoid data 'someone/some-dataset' is a Hugging Face dataset id, not a local file, and the "
     "hub cannot be reached (ConnectionError)", unreachable),
    (E + ["--data", "someone/no-such-dataset"],
     "factoid data 'someone/no-such-dataset': no such dataset on the Hugging Face hub", not_on_hub),
    (E + ["--data", "{tmp}/folder"], "factoid data '{tmp}/folder' is a folder"),
    (E + ["--task", "mmlu", "--data", "{tmp}/mmlu3.jsonl"], "mmlu3.jsonl:1: mmlu needs 4 choices"),
    (E + ["--task", "icraqa", "--data", "{tmp}/icraqa_ctx.jsonl"],
     "icraqa_ctx.jsonl:1: field 'context' must be a string, got int 5"),
    (E + ICSUM + ["--data", "{tmp}/icsum_doc.jsonl"], "field 'document' must be a string, got list [1]"),
    (E + ["--task", "instruct", "--data", "{tmp}/instruct_str.jsonl"],
     "field 'turns' must be a list of strings, got str 'hi'"),
    (E + ["--task", "perplexity", "--data", "{tmp}/short.txt"], "fewer than one window of 512 tokens"),
    (E + ["--task", "perplexity", "--data", "{tmp}/ppl_notext.jsonl"], "ppl_notext.jsonl:1: row lacks field 'text'"),
    (E + ["--task", "nosuch"], "unknown task 'nosuch'"),
    (E + ["--template", "nope"], "unknown template 'nope' for task factoid"),
    # ---- eval: judges
    (E + ICSUM + ["--judge", "local:no-such-model"], "judge 'local:no-such-model': unknown model 'no-such-model'"),
    (E + ICSUM + ["--judge", "https://judge.example.com/v1", "--judge-model", "m", "--judge-key-env",
                  "KB_UNSET_KEY"], "API key variable KB_UNSET_KEY is not set"),
    (E + ICSUM + HTTP_REMOTE, "'http://judge.example.com/v1' is plain http:// to another host"),
    (E + ICSUM + ["--judge", "gpt4"], "unknown judge 'gpt4'"),
    (E + ICSUM + ["--judge", "http://127.0.0.1:9/v1"], "needs a model name (--judge-model)"),
    # ---- eval: the results store
    (E + ["--store", "{tmp}/folder"], "results store {tmp}/folder is a folder"),
    (E + ["--store", "{tmp}/notsqlite.sqlite"], "results store {tmp}/notsqlite.sqlite is not an SQLite database"),
    (E + ["--store", "{tmp}/afile.txt/s.sqlite"], "{tmp}/afile.txt is a file, not a folder"),
    (E + ["--store", "{tmp}/readonly_dir/s.sqlite"],
     "{tmp}/readonly_dir/s.sqlite cannot be created: {tmp}/readonly_dir is not writable", unwritable),
    # ---- eval: models and compression
    (["eval", "--model", "no-such", "--store", "{tmp}/s.sqlite"], "unknown model 'no-such'"),
    (["eval", "--model", "someone/some-model", "--store", "{tmp}/s.sqlite"],
     "model 'someone/some-model' is a Hugging Face model id, not a local file, and the hub cannot "
     "be reached", unreachable),
    (["eval", "--model", "someone/some-model", "--store", "{tmp}/s.sqlite"],
     "model 'someone/some-model' is a Hugging Face model id, not a local file, and HF_HUB_OFFLINE=1",
     offline),
    (["eval", "--model", "{tmp}/notamodel", "--store", "{tmp}/s.sqlite"], "{tmp}/notamodel has no config.json"),
    (["eval", "--model", "{tmp}/missing.gguf", "--store", "{tmp}/s.sqlite"], "GGUF file not found: {tmp}/missing.gguf"),
    (E + ["--method", "bogus"], "unknown compression method 'bogus'"),
    (E + ["--sparsity", "1.5"], "sparsity must be in [0, 1), got 1.5"),
    (E + ["--method", "rtn", "--bits", "9"], "bits in 2..8, got bits=9"),
    (E + ["--method", "rtn", "--bits", "4", "--group-size", "100"],
     "group_size 100: layer model.layers.0.self_attn.q_proj has input width 64"),
    (E + ["--pattern", "2:3"], "pattern 2:3: layer model.layers.0.self_attn.q_proj has input width 64"),
    (E + ["--method", "wanda", "--sparsity", "0.5", "--calib-data", "{tmp}/missing.jsonl"],
     "calibration text not found: {tmp}/missing.jsonl"),
    (E + ["--method", "wanda", "--sparsity", "0.5", "--calib-data", "{tmp}/calib_notext.jsonl"],
     "calib_notext.jsonl has no row with a non-empty 'text'"),
    (E + ["--method", "wanda", "--sparsity", "0.5", "--seqlen", "1000000"], "not more than seqlen=1000000"),
    (E + ["--method", "bnb-nf4"], "bnb-nf4"),
    # ---- compress
    (["compress", "--model", "tiny-llama", "--out", "{tmp}/stuff"],
     "--out {tmp}/stuff is a folder with other files in it, not a saved model"),
    (["compress", "--model", "tiny-llama", "--out", "{tmp}/afile.txt"], "--out {tmp}/afile.txt is a file, not a folder"),
    (C + ["--device", "bogus"], "unknown device 'bogus'"),
    (C + ["--dtype", "half"], "unknown dtype 'half'"),
    (["compress", "--model", "nope", "--out", "{tmp}/out"], "unknown model 'nope'"),
    (C + ["--method", "rtn", "--bits", "4", "--group-size", "100"], "group_size 100: layer"),
    (C + ["--method", "wanda", "--sparsity", "0.5", "--calib-data", "{tmp}/bad_json.jsonl"],
     "{tmp}/bad_json.jsonl:2: not valid JSON"),
    (C + ["--method", "bnb-int8"], "bnb-int8"),
    # ---- report
    (R + ["--limit", "-5"], "limit must be a positive number of items, got -5"),
    (R + ["--methods", "rtn", "--bits", "4.5"], "--bits expects comma-separated integers, got '4.5'"),
    (R + ["--methods", "rtn", "--group-size", "100"], "group_size 100: layer"),
    (R + ["--data", "factoid={tmp}/missing.jsonl"], "factoid data not found: {tmp}/missing.jsonl"),
    (R + ["--tasks", "mmlu", "--data", "{tmp}/mmlu3.jsonl"], "mmlu3.jsonl:1: mmlu needs 4 choices"),
    (R + ["--ppl-data", "{tmp}/short.txt"], "perplexity text {tmp}/short.txt has"),
    (R + ["--ppl-window", "4096"], "perplexity window 4096 exceeds the context of tiny-llama (512 tokens)"),
    (R + ["--ppl-windows", "-1"], "ppl_windows must be >= 0, got -1"),
    (R + ["--metric", "nosuch"], "metric 'nosuch' belongs to none of the chosen tasks"),
    (R + ["--name", "../x"], "report name '../x' is not allowed"),
    (["report", "--model", "tiny-llama", "--out", "{tmp}/afile.txt"], "--out {tmp}/afile.txt is a file"),
    (R + ["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (R + ["--device", "cuda:99"], "device 'cuda:99'"),
    (R + ["--task-limit", "factoid=-1"], "--task-limit expects TASK=N with N a positive integer, got '-1'"),
    (R + ["--tasks", "icsum"] + HTTP_REMOTE, "'http://judge.example.com/v1' is plain http://"),
    (R + ["--store", "{tmp}/folder"], "results store {tmp}/folder is a folder"),
    (R + ["--methods", "wanda", "--calib-data", "{tmp}/missing.jsonl"], "calibration text not found"),
    # ---- findings
    (F + ["--limit", "0"], "--limit must be a positive number of questions, got 0"),
    (F + ["--large-model", "nope"], "unknown model 'nope'"),
    (F + ["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (F + ["--device", "bogus"], "unknown device 'bogus'"),
    (F + ["--name", "../x"], "report name '../x' is not allowed"),
    (F + ["--store", "{tmp}/notsqlite.sqlite"], "is not an SQLite database"),
    (F + ["-p", 'methods="wanda"'], "-p methods='wanda': expected list"),
    (F + ["-p", 'methods=["bogus"]'], "unknown compression method 'bogus'"),
    (F + ["-p", 'quantizers=["rtn w4"]', "-p", 'factoid_data="{tmp}/missing.jsonl"'],
     "factoid data not found: {tmp}/missing.jsonl"),
    (F + ["-p", "ppl_windows=-1"], "ppl_windows must be an integer >= 0, got -1"),
    (F + ["-p", "nosuch=1"], "-p 'nosuch=1': expected NAME=VALUE"),
    # ---- app and lab
    (["app", "--port", "0", "--dry-run"], "--port must be in 1..65535, got 0"),
    (["app", "--port", "70000", "--dry-run"], "--port must be in 1..65535, got 70000"),
    (["app", "--cull-idle", "0", "--dry-run"], "cull_idle_s must be >= 1 second, got 0"),
    (["lab", "--port", "-1", "--dry-run"], "--port must be in 1..65535, got -1"),
]


@pytest.fixture
def tmp(tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for name in DIRS:
        (tmp_path / name).mkdir()
    return tmp_path


@pytest.fixture
def nothing_runs(monkeypatch):
    """Every way to slow work raises; returns what was attempted (tokenizer reads recorded)."""
    seen = {"load": [], "tokenizer": []}

    def refuse_load(name, *a, **kw):
        seen["load"].append(name)
        raise AssertionError(f"a model was loaded: {name}")

    def forbidden(what):
        def fn(*a, **kw):
            raise AssertionError(f"{what} ran")
        return fn

    real_tok = validate.load_tokenizer
    monkeypatch.setattr(models, "load", refuse_load)
    monkeypatch.setattr(validate, "load_tokenizer",
                        lambda name: seen["tokenizer"].append(name) or real_tok(name))
    monkeypatch.setattr(sweep, "execute", forbidden("sweep.execute"))
    monkeypatch.setattr(report, "render", forbidden("report.render"))
    monkeypatch.setattr(os, "execv", forbidden("os.execv"))
    monkeypatch.delenv("KB_UNSET_KEY", raising=False)
    return seen


def _fill(text, tmp):
    return text.replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", CATALOGUE, ids=[f"{i:02d}-{c[0][0]}" for i, c in enumerate(CATALOGUE)])
def test_bad_input_is_refused_before_any_work(case, tmp, nothing_runs, monkeypatch, capsys):
    argv, fragment, *setup = case
    for fn in setup:
        fn(monkeypatch, tmp)
    code = main([_fill(a, tmp) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()  # a library may log a line of its own before ours
    ours = [line for line in lines if line.startswith("kickbench: error: ")]
    assert len(ours) == 1 and lines[-1] == ours[0], err
    assert _fill(fragment, tmp) in ours[0], ours[0]
    assert nothing_runs["load"] == []


def test_the_catalogue_covers_every_command():
    assert len(CATALOGUE) >= 40
    assert {c[0][0] for c in CATALOGUE} == {"eval", "compress", "report", "findings", "app", "lab"}


def test_a_short_text_is_counted_in_bytes_when_no_tokenizer_is_at_hand(tmp, monkeypatch, capsys):
    monkeypatch.setattr(validate, "load_tokenizer", lambda name: None)
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    assert main(E[:1] + ["--model", "tiny-llama", "--store", str(tmp / "s.sqlite"), "--task",
                         "perplexity", "--data", str(tmp / "short.txt")]) == 2
    err = capsys.readouterr().err
    assert "has 10 bytes" in err and "a token covers at least one byte" in err


def test_the_notebook_path_validates_the_same_way(tmp):
    params = {k: None for k in config.REPORT_PARAMETERS}
    params.update(model="tiny-llama", methods=["magnitude"], sparsities=[0.5], patterns=[],
                  bits=[], symmetric=False, partial_groups=False, options={}, tasks=["factoid"],
                  data={"factoid": str(tmp / "answers_int.jsonl")}, task_limits={}, nsamples=2,
                  seqlen=16, ppl_windows=0, batch_size=8, seed=0, progress=False)
    with pytest.raises(validate.InputError, match="field 'answers' must be"):
        config.report_plan(params)
    with pytest.raises(validate.InputError, match="limit must be a positive number of items, got -5"):
        config.report_plan({**params, "data": {}, "limit": -5})
    with pytest.raises(validate.InputError, match="task limit of factoid must be a positive"):
        config.report_plan({**params, "data": {}, "task_limits": {"factoid": 0}})
    plan = config.report_plan({**params, "data": {}})
    assert [r.spec.label for r in plan.runs] == ["dense", "magnitude 50%"]


def test_what_the_workbench_calls(tmp):
    """ui.Workbench.run: validate.runs(plan, settings) after sweep.plan, in its try block."""
    runs = sweep.plan(["tiny-llama"], [config.spec("dense")],
                      [TaskSpec("factoid", data=str(tmp / "question_int.jsonl"), limit=4)])
    with pytest.raises(ValueError, match="field 'question' must be a string"):
        validate.runs(runs, sweep.Settings(batch_size=16))
    good = sweep.plan(["tiny-llama"], [config.spec("dense")], [TaskSpec("factoid", limit=4),
                                                              TaskSpec("perplexity", limit=2, window=128)])
    validate.runs(good, sweep.Settings(batch_size=16))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        validate.runs(good, sweep.Settings(batch_size=0))
    with pytest.raises(ValueError, match="window 4096 exceeds the context"):
        validate.runs(sweep.plan(["tiny-llama"], [config.spec("dense")],
                                 [TaskSpec("perplexity", limit=2, window=4096)]))


def test_valid_inputs_pass(tmp, monkeypatch):
    """The project's data and calibration text, and the shared sets where present, pass."""
    from kickbench.tasks import TASKS

    for name in TASKS:
        validate.data_file(name)
    validate.calibration_source(CalibrationSpec(), validate.ModelFacts("tiny-llama"))
    shared = PROJECT_DATA.parents[1] / "shared" / "data"
    for task, rel in (("factoid", "freebaseqa/eval.jsonl"), ("mmlu", "mmlu/test.jsonl"),
                      ("icraqa", "nq_open_oracle/test.jsonl"),
                      ("icsum", "cnn_dailymail_llmkick/stories.jsonl"),
                      ("icsum", "xsum/test_1000.jsonl"), ("instruct", "vicuna_bench/vicuna_bench.jsonl"),
                      ("instruct", "mt_bench/mt_bench.jsonl"), ("perplexity", "wikitext2/wiki.test.raw")):
        if (shared / rel).exists():
            assert validate.data_file(task, str(shared / rel)) > 0
    monkeypatch.setattr(validate, "hub_repo_info", lambda repo, kind: object())  # a hub that has it
    assert validate.source("cais/mmlu:all@test", "mmlu data") is None
    assert validate.source("wikitext:wikitext-2-raw-v1@test", "perplexity text") is None
    validate.store_path(tmp / "new" / "s.sqlite")
    validate.model_out(tmp / "folder")  # empty: fine


def test_eval_and_compress_state_the_dtype(tmp, tiny, monkeypatch, capsys):
    lm = tiny("tiny-llama")  # one fp32 CPU load for both commands
    monkeypatch.setattr(models, "load", lambda name, *a, **k: lm)
    data = tmp / "qa.jsonl"
    data.write_text(json.dumps({"id": "1", "question": "Capital of Peru?", "answers": ["Lima"]}) + "\n")
    assert main(["eval", "--model", "tiny-llama", "--no-baseline", "--data", str(data), "--limit", "1",
                 "--store", str(tmp / "s.sqlite"), "--device", "cpu"]) == 0
    assert "dtype: float32 on cpu (the default on cpu" in capsys.readouterr().out
    assert main(["compress", "--model", "tiny-llama", "--dtype", "float32", "--out", str(tmp / "m")]) == 0
    assert "dtype: float32 on cpu" in capsys.readouterr().out


def test_an_unexpected_error_still_shows_its_traceback(monkeypatch):
    monkeypatch.setattr(validate, "port", lambda p: (_ for _ in ()).throw(KeyError("bug")))
    with pytest.raises(KeyError):
        main(["app", "--dry-run"])

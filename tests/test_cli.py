import json

from kickbench.cli import main


def test_eval_prints_a_table_with_the_dense_baseline(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"id": "1", "question": "Capital of Peru?", "answers": ["Lima"]}) + "\n")
    rc = main(["eval", "--model", "tiny-llama", "--method", "magnitude", "--sparsity", "0.3",
               "--data", str(data), "--limit", "1", "--store", str(tmp_path / "s.sqlite"),
               "--dtype", "float32"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dense" in out and "magnitude" in out and "haystack_accuracy" in out


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["eval", "--model", "tiny-llama", "--sparsity", "1.5"]) == 2
    assert "sparsity must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert main(["report", "--methods", "sparsegptt", "--out", str(tmp_path)]) == 2
    assert "unknown compression method 'sparsegptt'" in capsys.readouterr().err


def test_report_task_flags_are_checked_before_any_work(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["report", "--tasks", "mmlu,icraqa:open-book", "--out", out]) == 2
    assert "unknown template 'open-book' for task icraqa" in capsys.readouterr().err
    assert main(["report", "--tasks", "mmlu", "--data", "factoid=x.jsonl", "--out", out]) == 2
    assert "task 'factoid' is not among --tasks (mmlu)" in capsys.readouterr().err
    assert main(["report", "--tasks", "", "--out", out]) == 2
    assert "--tasks is empty" in capsys.readouterr().err
    assert main(["report", "--tasks", "factoid", "--ppl-window", "1", "--out", out]) == 2
    assert "window must be >= 2" in capsys.readouterr().err


def test_static_exports_need_a_browser_and_lab_app_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium anywhere
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    assert main(["report", "--png", "--out", str(tmp_path)]) == 2
    assert "--png/--pdf need Chromium" in capsys.readouterr().err
    assert main(["app", "--cull-idle", "0", "--dry-run"]) == 2
    assert "cull_idle_s must be >= 1 second, got 0" in capsys.readouterr().err
    assert main(["app", "--port", "8899", "--dry-run", "--no-browser"]) == 0
    argv = capsys.readouterr().out.split()
    assert "voila" in argv and "--port=8899" in argv and "--no-browser" in argv
    assert "--MappingKernelManager.cull_idle_timeout=600" in argv
    assert argv[argv.index("voila") + 1].endswith("notebooks/workbench.ipynb")
    assert main(["lab", "--port", "0", "--dry-run"]) == 2
    assert "--port must be in 1..65535, got 0" in capsys.readouterr().err


def test_findings_flags_are_checked_before_any_work(capsys):
    assert main(["findings", "--limit", "0"]) == 2
    assert "--limit must be a positive number of questions, got 0" in capsys.readouterr().err
    assert main(["findings", "--large-model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["findings", "-p", "sparsity=0.5"]) == 2
    err = capsys.readouterr().err
    assert "-p 'sparsity=0.5'" in err and "sparsities" in err


def test_list_names_builtins_methods_and_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "magnitude" in out and "factoid" in out


def test_compress_saves_a_folder_that_loads_back_pruned(tmp_path, capsys):
    from kickbench import models
    from kickbench.compress.layers import target_linears, weight_matrix

    out = tmp_path / "pruned"
    assert main(["compress", "--model", "tiny-llama", "--method", "magnitude", "--pattern", "2:4",
                 "--dtype", "float32", "--out", str(out)]) == 0
    assert "sparsity 0.5000, 9.00 bits per compressed weight" in capsys.readouterr().out
    lm = models.load(str(out), device="cpu")
    for _, module in target_linears(lm.model):
        assert ((weight_matrix(module).reshape(-1, 4) != 0).sum(dim=1) <= 2).all()


def test_quantization_flags(tmp_path, capsys):
    out = tmp_path / "rtn"
    assert main(["compress", "--model", "tiny-llama", "--method", "rtn", "--bits", "3",
                 "--group-size", "32", "--dtype", "float32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rtn w3 g32: " in printed and "3.59 bits per compressed weight" in printed
    assert "fake quantization" in printed
    assert main(["eval", "--model", "tiny-llama", "--method", "gptq", "--bits", "4",
                 "--group-size", "48", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "layer model.layers.0.self_attn.q_proj has input width 64" in capsys.readouterr().err
    assert main(["report", "--methods", "rtn", "--bits", "4,16", "--out", str(tmp_path)]) == 2
    assert "bits in 2..8, got bits=16" in capsys.readouterr().err


def test_judge_and_temperature_flags_are_checked_before_any_work(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["eval", "--model", "tiny-llama", "--task", "icsum", "--judge", "gpt4"]) == 2
    assert "unknown judge 'gpt4'; use local:<model> or an http(s):// endpoint" in capsys.readouterr().err
    assert main(["report", "--tasks", "icsum", "--judge", "http://127.0.0.1:9/v1", "--out", out]) == 2
    assert "needs a model name (--judge-model)" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny-llama", "--task", "mmlu", "--temperature", "0.7"]) == 2
    assert "temperature applies to generation tasks, not mmlu" in capsys.readouterr().err
    assert main(["report", "--tasks", "icsum", "--task-limit", "icsum=0", "--out", out]) == 2
    assert "--task-limit expects TASK=N with N a positive integer, got '0'" in capsys.readouterr().err

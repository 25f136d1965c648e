"""A newcomer's first hour (issue 20): progress in the terminal while a report renders, reports
without machine paths or setup logs, a provenance section that reproduces the report, one
matching band per panel and readable log ticks, `kickbench list` and --help that explain
themselves, and --config files."""

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kickbench import cli, plots, progress, report

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-llama", "--methods", "magnitude", "--sparsities", "0.5", "--patterns", "",
        "--tasks", "factoid", "--limit", "4", "--ppl-windows", "1", "--ppl-window", "64",
        "--nsamples", "2", "--seqlen", "32", "--dtype", "float32", "--device", "cpu"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """`kickbench report` on a tiny model, as a user runs it: a subprocess, stderr a pipe."""
    tmp = tmp_path_factory.mktemp("newcomer")
    store, out = tmp / "results.sqlite", tmp / "out"
    argv = [str(Path(sys.executable).with_name("kickbench")), "report", *TINY, "--store", str(store),
            "--out", str(out), "--name", "tiny"]
    done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"store": store, "out": out, "tmp": tmp, "stderr": done.stderr, "stdout": done.stdout,
            "html": (out / "tiny.html").read_text(encoding="utf-8"),
            "ipynb": nbformat.read(out / "tiny.ipynb", as_version=4)}


@pytest.mark.slow
def test_report_shows_stage_progress_on_stderr_and_no_kernel_warning(rendered):
    err = rendered["stderr"]
    assert "Kernel is running over TCP" not in err and "IPKernelApp" not in err
    lines = err.splitlines()
    for stage in ("loading", "compressing", "generating", "scoring", "charting", "rendering"):
        assert any(line.endswith(stage) or f"· {stage}" in line for line in lines), (stage, err)
    assert "run 1/4 dense · factoid · generating: 100%|##########| 4/4" in err  # items, rate, ETA
    assert "run 3/4 magnitude 50% · factoid · compressing" in err
    assert re.search(r"run 4/4 magnitude 50% · perplexity · scoring: .*1/1 \[\d\d:\d\d<\d\d:\d\d", err)
    assert len(lines) < 30  # a line per stage, not per batch
    assert "Converting" not in err and "Loading weights" not in err  # setup output stays out


@pytest.mark.slow
def test_report_html_holds_no_machine_path_and_no_setup_log(rendered):
    text = rendered["html"]
    for path in {"/root", "/tmp", "/work", str(Path.home()), str(ROOT), str(rendered["tmp"])}:
        assert path not in text, path
    streams = [o for c in rendered["ipynb"].cells for o in c.get("outputs", []) if o.output_type == "stream"]
    assert streams == []  # no conversion messages, loading bars, warnings or store paths
    # the provenance section: setup facts, the configuration and the command
    assert ">results store</th>" in text and ">results.sqlite</td>" in text
    for fact in ("model fingerprint", ">dtype</th>", ">float32</td>", ">device</th>", ">cpu</td>",
                 ">kickbench</th>", ">torch</th>", ">transformers</th>", ">python</th>"):
        assert fact in text, fact
    import html

    shown = html.unescape(text)
    assert "kickbench report --model tiny-llama --methods magnitude --sparsities 0.5 --patterns ''" in shown
    assert '\nstore = "results.sqlite"\n' in shown and "--store results.sqlite " in shown


@pytest.mark.slow
def test_the_reports_configuration_renders_it_again_from_the_store(rendered, tmp_path, capsys):
    """The configuration the provenance section prints is a --config file: rendering it again
    against the same store computes nothing and records the same configuration."""
    from kickbench import results
    from kickbench.store import Store

    toml = provenance_toml(rendered["ipynb"])
    config = tmp_path / "again.toml"
    config.write_text(toml)
    before = len(results.frame(Store(rendered["store"])))
    assert cli.main(["report", "--config", str(config), "--store", str(rendered["store"]),
                     "--out", str(tmp_path), "--name", "again"]) == 0
    assert len(results.frame(Store(rendered["store"]))) == before  # read back, nothing recomputed
    assert provenance_toml(nbformat.read(tmp_path / "again.ipynb", as_version=4)) == toml
    assert "rendering" in capsys.readouterr().err


def provenance_toml(nb) -> str:
    import html

    out = next(o["data"]["text/html"] for o in nb.cells[-1].outputs
               if "Configuration" in o.get("data", {}).get("text/html", ""))
    return html.unescape(out.split("<pre>")[2].split("</pre>")[0])


# ---- --config ------------------------------------------------------------------------------
def readme_command() -> list[str]:
    """The README's FreebaseQA pruning command ("One command renders it all")."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    para = text[text.index("One command renders it all"):]
    command = para[para.index("`kickbench report") + 1:]
    return shlex.split(command[:command.index("`")].replace("\n", " "))[1:]


def test_the_shipped_config_is_the_readme_command():
    flags = cli.parse(readme_command())
    config = cli.parse(["report", "--config", str(ROOT / "examples" / "llmkick-smollm2.toml")])
    assert cli.report_params(config) == cli.report_params(flags)
    assert (config.name, config.out) == (flags.name, flags.out) == ("freebaseqa-pruning", "reports")


def test_flags_override_the_config_and_yaml_reads_the_same(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('methods = "wanda,rtn"\nbits = [4]\nlimit = 10\ndata = {factoid = "a.jsonl"}\n'
                    'task_limit = {factoid = 3}\nawq-grid = 5\nawq_clip = false\npng = false\n')
    args = cli.parse(["report", "--config", str(toml), "--limit", "2", "--data", "factoid=b.jsonl"])
    p = cli.report_params(args)
    assert (p["methods"], p["bits"], p["limit"]) == (["wanda", "rtn"], [4], 2)
    assert p["data"] == {"factoid": "b.jsonl"} and p["task_limits"] == {"factoid": 3}
    assert p["options"] == {"awq_grid": 5, "awq_clip": False}
    pytest.importorskip("yaml")
    yaml = tmp_path / "c.yaml"
    yaml.write_text("methods: wanda,rtn\nbits: [4]\nlimit: 10\ndata: {factoid: a.jsonl}\n"
                    "task_limit: {factoid: 3}\nawq-grid: 5\nawq_clip: false\npng: false\n")
    assert cli.report_params(cli.parse(["report", "--config", str(yaml)])) == \
        cli.report_params(cli.parse(["report", "--config", str(toml)]))


def test_config_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    # a model that cannot load and a store of its own, should the key ever pass
    bad.write_text(f'model = "nope"\nstore = "{tmp_path / "s.sqlite"}"\nlevel = 0.5\n')
    for command in ("eval", "report", "findings"):
        assert cli.main([command, "--config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unknown key 'level'" in err and str(bad) in err
    bad.write_text("symmetric = 'yes'\n")
    assert cli.main(["report", "--config", str(bad)]) == 2
    assert "'symmetric' is true or false" in capsys.readouterr().err
    bad.write_text("limit = [\n")
    assert cli.main(["report", "--config", str(bad)]) == 2
    assert f"config {bad}: " in capsys.readouterr().err
    assert cli.main(["report", "--config", str(tmp_path / "none.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_config_drives_a_tiny_eval(tmp_path, capsys):
    config = tmp_path / "eval.toml"
    config.write_text('model = "tiny-llama"\nmethod = "magnitude"\nsparsity = 0.3\nlimit = 2\n'
                      f'dtype = "float32"\nstore = "{tmp_path / "s.sqlite"}"\nno-baseline = true\n')
    assert cli.main(["eval", "--config", str(config), "--sparsity", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "magnitude 50%" in out and "dense" not in out


def test_a_reports_configuration_and_command_read_back_as_its_parameters():
    argv = ["report", "--model", "tiny-llama", "--methods", "wanda,awq", "--sparsities", "0.25,0.5",
            "--patterns", "", "--bits", "4", "--tasks", "factoid,icraqa:closed",
            "--data", "factoid=data/factoid.jsonl", "--task-limit", "icraqa=3", "--limit", "7",
            "--calib-data", "data/calibration.jsonl", "--ppl-windows", "0", "--store", "s.sqlite",
            "--seed", "3", "--awq-grid", "4", "--no-awq-clip", "--layerwise", "owl",
            "--metric", "legacy_accuracy", "--temperature", "0.5"]
    params = cli.report_params(cli.parse(argv))
    conf = report.configuration(params)
    command = shlex.split(report.command_line(conf))
    assert command[:2] == ["kickbench", "report"]
    assert cli.report_params(cli.parse(command[1:])) == params
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(report.config_toml(conf))
    try:
        assert cli.report_params(cli.parse(["report", "--config", f.name])) == params
    finally:
        os.unlink(f.name)


def test_configuration_shows_paths_without_the_machine():
    params = cli.report_params(cli.parse(["report", "--store", "/var/lib/x/results.sqlite",
                                          "--data", str(ROOT / "data" / "factoid.jsonl"),
                                          "--ppl-data", "/home/someone/wiki.test.raw"]))
    conf = report.configuration(params)
    assert conf["store"] == "results.sqlite" and conf["ppl_data"] == "wiki.test.raw"
    assert conf["data"] == {"factoid": "data/factoid.jsonl"}


# ---- help and list -------------------------------------------------------------------------
def test_every_flag_of_every_command_has_help_with_its_default():
    top = cli.parser()
    for name, command in top.commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if action.dest == "help":
                continue
            text = formatter._get_help_string(action) or ""
            assert action.help, (name, action.option_strings)
            assert "default" in text.lower() or "required" in text, (name, action.option_strings, text)


def test_list_describes_each_task_with_its_llm_kick_name(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for words in ("factoid QA", "FreebaseQA", "MCR-QA", "MMLU", "ICR-QA", "IC-Sum",
                  "instruction following", "templates fewshot (default)",
                  "scorings strict -> accuracy", "default data data/factoid.jsonl"):
        assert words in out, words
    assert str(ROOT) not in out


# ---- charts --------------------------------------------------------------------------------
def test_log_ticks_are_round_numbers():
    assert plots.log_ticks(2.1, 2163) == [5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    assert plots.log_ticks(30, 101) == [30, 40, 50, 60, 70, 80, 90, 100]
    assert plots.log_ticks(30.4, 32.4) == []
    assert [plots._tick_text(v) for v in (0.5, 20.0, 2000.0)] == ["0.5", "20", "2,000"]


def frame():
    import pandas as pd

    rows = []
    for task, metric, dense, worse in (("factoid", "accuracy", 0.1, -0.09),
                                       ("perplexity", "perplexity", 30.0, 2100.0)):
        for label, method, sparsity, value in (("dense", "dense", 0.0, dense),
                                               ("wanda 30%", "wanda", 0.3, dense + worse / 4),
                                               ("wanda 60%", "wanda", 0.6, dense + worse)):
            rows.append(dict(model="m", task=task, task_label=task, metric=metric,
                             family="pruning" if sparsity else "dense", method=method,
                             setting="unstructured" if sparsity else "", label=label,
                             sparsity=sparsity, size_fraction=1 - sparsity, value=value,
                             ci_low=value * 0.9, ci_high=value * 1.1, n=4))
    return pd.DataFrame(rows)


def test_each_panel_has_one_matching_band_named_for_its_metric():
    fig = plots.small_multiples(frame(), [("factoid", "accuracy"), ("perplexity", "perplexity")], model="m")
    bands = [t for t in fig.data if t.name.startswith("matching band")]
    assert [t.name for t in bands] == ["matching band: factoid ≥ 95% of dense",
                                       "matching band: perplexity ≤ 105% of dense"]
    assert [t.legend for t in bands] == ["legend2", "legend3"]  # each in its own panel's legend
    assert not any(t.name.startswith("matching") for t in fig.data if t.legend in (None, "legend"))
    y2 = fig.layout.yaxis2
    assert y2.type == "log" and list(y2.tickvals) == [50, 100, 200, 500, 1000, 2000]
    assert list(y2.ticktext) == ["50", "100", "200", "500", "1,000", "2,000"]


# ---- the progress display ------------------------------------------------------------------
def test_a_log_gets_a_line_per_stage_not_per_batch(tmp_path):
    events = tmp_path / "p.jsonl"
    w = progress.Writer(events)
    w.stage("loading", "tiny-llama")
    for done in range(1, 101):
        w.stage("generating", "dense · factoid", 1, 2, done, 100)
    w.event(log="Converting and de-quantizing GGUF tensors...\n")
    w.stage("scoring", "dense · perplexity", 2, 2, 4, 4)
    quiet, loud = io.StringIO(), io.StringIO()
    for file, verbose in ((quiet, False), (loud, True)):
        display = progress.Display(file=file, verbose=verbose)
        with progress.follow(events, display):
            pass
        display.close()
    lines = quiet.getvalue().splitlines()
    assert lines[0] == "tiny-llama · loading"
    assert lines[1].startswith("run 1/2 dense · factoid · generating:   1%|")
    assert lines[2].startswith("run 1/2 dense · factoid · generating: 100%|##########| 100/100")
    assert lines[3].startswith("run 2/2 dense · perplexity · scoring: 100%") and len(lines) == 4
    assert "Converting" not in quiet.getvalue() and "Converting" in loud.getvalue()


def test_progress_execute_without_a_file_is_sweep_execute(monkeypatch):
    from kickbench import sweep

    seen = []
    monkeypatch.setattr(sweep, "execute", lambda *a: seen.append(a) or "frame")
    assert progress.execute(["runs"], "store", "settings") == "frame"
    assert seen == [(["runs"], "store", "settings", None)]


def test_captured_output_goes_to_the_progress_file(tmp_path):
    import logging

    w = progress.Writer(tmp_path / "p.jsonl")
    log = logging.getLogger("kickbench-test-captured")
    handler = logging.StreamHandler(sys.stderr)
    log.addHandler(handler)
    try:
        with progress.captured(w):
            print("kickbench: converting x.gguf to safetensors in /root/.cache (once)")
            sys.stderr.write("a library warning\n")
            log.warning("a logged warning")
    finally:
        log.removeHandler(handler)
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    logged = "".join(json.loads(line).get("log", "") for line in lines)
    assert "converting x.gguf" in logged and "a library warning" in logged and "a logged warning" in logged
    assert handler.stream is sys.stderr

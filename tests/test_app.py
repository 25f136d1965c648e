"""`kickbench app` / `kickbench lab`: loopback and a fresh token by default, --public keeps the
token, the app's model box takes only the offered models; a real Voila app refuses a request
without its token."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from kickbench import lab, models
from kickbench.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flags(argv):
    """--name=value flags and the NAME=VALUE settings the server starts with (env prefix)."""
    return {**dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a),
            **lab.launch_env(argv)}


def printed_argv(out: str, marker: str) -> list[str]:
    """The printed command line (the one line holding `marker`) as argv."""
    (line,) = [x for x in out.splitlines() if marker in x]
    return line.split()


def test_app_dry_run_listens_on_loopback_with_a_token(capsys):
    assert main(["app", "--dry-run", "--no-browser"]) == 0
    argv = printed_argv(capsys.readouterr().out, " -m voila ")
    f = flags(argv)
    assert f["Voila.ip"] == "127.0.0.1" and len(f["JUPYTER_TOKEN"]) >= 32
    assert f["Voila.auto_token"] == "True" and "Voila.token" not in f  # Voila reads the token
    assert f[lab.APP_MODELS_ENV] == "[]"  # app mode: built-ins only
    assert main(["lab", "--dry-run", "--no-browser"]) == 0
    f = flags(printed_argv(capsys.readouterr().out, " -m jupyter lab "))
    assert f["ServerApp.ip"] == "127.0.0.1" and len(f["JUPYTER_TOKEN"]) >= 32
    assert "IdentityProvider.token" not in f


def test_public_changes_the_address_but_keeps_a_token():
    for make, ip, off in ((lab.app_command, "Voila.ip", "Voila.token"),
                          (lab.lab_command, "ServerApp.ip", "IdentityProvider.token")):
        f = flags(make(public=True, open_browser=False))
        assert f[ip] == "0.0.0.0" and len(f["JUPYTER_TOKEN"]) >= 32 and off not in f
        with pytest.raises(ValueError, match="without a token"):
            make(public=True, token="")
        f = flags(make(token=""))  # authentication off: loopback tests only
        assert f[off] == "" and "JUPYTER_TOKEN" not in f and f[ip] == "127.0.0.1"


def test_a_token_is_random_per_call_and_in_the_url():
    for make in (lab.app_command, lab.lab_command):
        assert len({flags(make())["JUPYTER_TOKEN"] for _ in range(5)}) == 5
    argv = lab.app_command(port=8123)
    assert lab.url(argv) == f"http://127.0.0.1:8123/?token={flags(argv)['JUPYTER_TOKEN']}"
    argv = lab.lab_command(port=8124)
    assert lab.url(argv) == f"http://127.0.0.1:8124/lab?token={flags(argv)['JUPYTER_TOKEN']}"
    assert lab.url(lab.app_command(token="")) == "http://127.0.0.1:8866/"


def test_the_allowed_models_reach_the_notebook():
    argv = lab.app_command(models=["org/model-a", " /srv/models/b ", "org/model-a"])
    assert lab.app_models(lab.launch_env(argv)) == ["org/model-a", "/srv/models/b"]
    assert lab.app_models({}) is None  # plain JupyterLab: any model
    assert lab.app_models({"VOILA_APP_PORT": "8866"}) == []  # Voila without the list: built-ins
    for bad in ("org/model", '{"a": 1}', "[1]", '[""]'):
        with pytest.raises(ValueError):
            lab.app_models({lab.APP_MODELS_ENV: bad})
    with pytest.raises(ValueError, match="list of names"):
        lab.app_command(models="org/model")


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything past the model check runs (planning, loading)."""
    calls = []

    def refuse(*args, **kw):
        calls.append(args)
        raise AssertionError("reached planning or loading")

    monkeypatch.setattr("kickbench.sweep.plan", refuse)
    monkeypatch.setattr("kickbench.models.load", refuse)
    monkeypatch.setattr("kickbench.session.Session.model", refuse)
    return calls


def test_app_mode_workbench_refuses_other_models_before_loading(tmp_path, no_loading):
    from kickbench.ui import Workbench

    wb = Workbench(model="tiny-llama", models=["org/offered"], store=tmp_path / "r.sqlite",
                   background=False, device="cpu", dtype="float32")
    assert wb.model.ensure_option
    assert set(wb.model.options) == {*models.REAL_BUILTINS, "org/offered", "tiny-llama"}
    for typed in ("/etc/passwd", "someone/else", "../models/x", "org/offered2"):
        wb.model.value = typed
        wb.run()
        assert isinstance(wb.error, ValueError) and "offers only these models" in str(wb.error)
        assert "offers only these models" in wb.status.value and not wb.running
    assert no_loading == []
    wb.model.value = " org/offered "  # an offered model gets past the check (to planning)
    with pytest.raises(AssertionError, match="reached planning"):
        wb.run()
    with pytest.raises(ValueError, match="not one this app offers"):
        Workbench(model="someone/else", models=[], store=tmp_path / "r.sqlite")


def notebook_workbench(env: dict, monkeypatch):
    """The workbench notebook's code cell run here, under `env`; returns its Workbench."""
    import ast

    nb = json.loads((lab.NOTEBOOKS / "workbench.ipynb").read_text())
    (cell,) = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tree = ast.parse("".join(cell["source"]))
    tree.body[-1] = ast.Assign([ast.Name("wb", ast.Store())], tree.body[-1].value)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    scope = {}
    exec(compile(ast.fix_missing_locations(tree), "workbench.ipynb", "exec"), scope)
    return scope["wb"]


def test_the_notebook_reads_the_app_list(tmp_path, monkeypatch):
    base = {"KICKBENCH_MODEL": "tiny-llama", "KICKBENCH_STORE": str(tmp_path / "r.sqlite")}
    for k in (lab.APP_MODELS_ENV, "VOILA_APP_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert notebook_workbench(base, monkeypatch).allowed is None  # JupyterLab: any model
    argv = lab.app_command(models=["org/offered"])
    wb = notebook_workbench({**base, **lab.launch_env(argv)}, monkeypatch)
    assert wb.model.ensure_option and "org/offered" in wb.allowed
    monkeypatch.delenv(lab.APP_MODELS_ENV)
    wb = notebook_workbench({**base, "VOILA_APP_PORT": "8866"}, monkeypatch)  # voila by hand
    assert wb.model.ensure_option and "org/offered" not in wb.allowed


def test_workbench_outside_the_app_takes_any_model(tmp_path):
    from kickbench.ui import Workbench

    wb = Workbench(model="tiny-llama", store=tmp_path / "r.sqlite")
    assert not wb.model.ensure_option and wb.allowed is None


@pytest.mark.slow
def test_voila_app_refuses_requests_without_its_token(tmp_path):
    port = free_port()
    env = {**os.environ, "KICKBENCH_MODEL": "tiny-llama",
           "KICKBENCH_STORE": str(tmp_path / "results.sqlite"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config")}
    argv = lab.app_command(port=port, open_browser=False, cull_idle_s=30, models=["org/offered"])
    base, token = f"http://127.0.0.1:{port}", flags(argv)["JUPYTER_TOKEN"]
    assert lab.url(argv) == f"{base}/?token={token}"
    with open(tmp_path / "voila.log", "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            time.sleep(1)  # `env` has exec'ed Voila by now: the token is not in its command line
            assert token not in Path(f"/proc/{proc.pid}/cmdline").read_text()
            deadline = time.time() + 120
            while True:
                try:
                    anonymous = requests.get(f"{base}/", timeout=10, allow_redirects=False)
                    break
                except requests.ConnectionError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError((tmp_path / "voila.log").read_text())
                    time.sleep(0.5)
            wrong = requests.get(f"{base}/?token=not-{token}", timeout=10, allow_redirects=False)
            page = requests.get(lab.url(argv), timeout=100)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    for refused in (anonymous, wrong):
        assert refused.status_code in (302, 403), refused.status_code
        if refused.status_code == 302:
            assert "/login" in refused.headers["Location"]
    assert page.ok, page.text[:500]
    assert "kickbench workbench" in page.text
    assert "application/vnd.jupyter.widget-view+json" in page.text
    assert "Traceback" not in page.text and "ValueError" not in page.text
    log = (tmp_path / "voila.log").read_text()
    assert token not in log  # Voila shows a token it did not generate as "..."

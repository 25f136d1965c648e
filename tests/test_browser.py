"""One real-browser smoke test: JupyterLab on loopback, Debian's Chromium driven by Playwright,
the workbench notebook run, a control changed, Run clicked, the new curve awaited in the DOM."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from kickbench import lab

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "reports"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a free loopback port over a copy of workbench.ipynb (autosave must not
    touch the repository's notebook), with a tiny model and a fresh store; stopped by PID."""
    shutil.copy(ROOT / "notebooks" / "workbench.ipynb", tmp_path / "workbench.ipynb")
    port = free_port()
    env = {**os.environ, "KICKBENCH_MODEL": "tiny-llama",
           "KICKBENCH_STORE": str(tmp_path / "results.sqlite"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    lab.ensure_settings()
    argv = lab.lab_command(root=tmp_path, port=port, open_browser=False, token="")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if requests.get(f"{url}/api/status", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_workbench_in_jupyterlab_runs_a_point_and_draws_it(jupyterlab):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; .ci/run does it)"
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        SHOTS.mkdir(exist_ok=True)
        page.goto(f"{jupyterlab}/lab/tree/workbench.ipynb")
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
        try:
            text = drive(page)
        except Exception:
            page.screenshot(path=str(SHOTS / "browser-workbench-failure.png"), full_page=True)
            raise
        page.screenshot(path=str(SHOTS / "browser-workbench.png"), full_page=True)
        browser.close()
    assert "Loading widget" not in text and "Error displaying widget" not in text
    assert "magnitude 50%" in text  # the results table
    assert errors == []


def drive(page) -> str:
    """Run all cells, switch the method and the item count, click Run, wait for the curve."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    out = page.locator(".jp-OutputArea-output")
    run = out.locator("button.widget-button", has_text="Run")
    run.wait_for(timeout=120_000)
    control = lambda label: out.locator(f'.widget-inline-hbox:has(label:text-is("{label}"))')  # noqa: E731
    control("method").locator("select").select_option("magnitude")
    items = control("items").locator("input")
    items.fill("4")
    items.press("Enter")
    run.click()
    out.locator("text=/done: magnitude 50%|error:/").wait_for(timeout=180_000)
    assert "error:" not in out.inner_text(), out.inner_text()
    legend = out.locator(".legendtext", has_text="magnitude unstructured")
    legend.first.wait_for(timeout=30_000)
    # the model box reads back a long typed hub id whole (the screenshot shows it)
    model = control("model").locator("input")
    model.fill(LONG_MODEL)
    scroll, client = model.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert scroll <= client, f"the model box cuts {LONG_MODEL!r} off ({scroll} > {client} px)"
    text = page.inner_text("body")
    return text


LONG_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct-wanda-50pct-unstructured-calibrated-c4"


def test_app_serves_the_workbench_with_voila(tmp_path):
    """`kickbench app`'s command: the workbench notebook executed per visitor, widgets in the page."""
    port = free_port()
    env = {**os.environ, "KICKBENCH_MODEL": "tiny-llama",
           "KICKBENCH_STORE": str(tmp_path / "results.sqlite"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config")}
    argv = lab.app_command(port=port, open_browser=False, cull_idle_s=30)
    with open(tmp_path / "voila.log", "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline, page = time.time() + 120, None
            while page is None:
                try:
                    page = requests.get(lab.url(argv), timeout=100)  # with its token
                except requests.ConnectionError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError((tmp_path / "voila.log").read_text())
                    time.sleep(0.5)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    assert page.ok, page.text[:500]
    assert "kickbench workbench" in page.text
    assert "application/vnd.jupyter.widget-view+json" in page.text  # the workbench's widget

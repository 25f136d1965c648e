import re

import nbformat
import pytest

from kickbench import report, results


def decode(values):
    """Plotly JSON stores numeric arrays as {"dtype", "bdata"} (base64)."""
    import base64

    import numpy as np

    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return values


def figures(nb):
    return [o["data"]["application/vnd.plotly.v1+json"] for c in nb.cells for o in c.get("outputs", [])
            if "application/vnd.plotly.v1+json" in o.get("data", {})]


def curve_names(fig):
    return {t["name"] for t in fig["data"] if not t["name"].startswith(("dense", "matching"))}


@pytest.mark.slow
def test_report_notebook_renders_offline_html_with_every_task(tmp_path):
    params = {"model": "tiny-llama", "sparsities": [0.2, 0.5], "patterns": ["2:4"], "limit": 4,
              "methods": ["magnitude", "wanda", "rtn"], "bits": [4, 3], "nsamples": 2, "seqlen": 32,
              "tasks": ["factoid", "mmlu:0-shot", "icraqa", "icraqa:closed"], "ppl_windows": 2,
              "ppl_window": 64, "store_path": str(tmp_path / "s.sqlite"), "dtype": "float32",
              "progress": False, "image_formats": ["png", "pdf"]}
    ipynb, html = report.render(params, out_dir=tmp_path, name="r")
    images = sorted(p.name for p in (tmp_path / "r-figures").iterdir())
    stems = ["mmlu-0-shot-by-category", "retrieval-open-vs-closed", "tasks-vs-size", "tasks-vs-sparsity"]
    assert images == [f"{s}.{f}" for s in stems for f in ("pdf", "png")]
    png = (tmp_path / "r-figures" / "tasks-vs-sparsity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[20:24], "big") == 330 * 3 + 120
    assert (tmp_path / "r-figures" / "tasks-vs-size.pdf").read_bytes()[:5] == b"%PDF-"
    text = html.read_text()
    assert '<script src="http' not in text and "<script src='http" not in text
    assert not re.search(r'<link[^>]+href="https?://', text)
    assert text.count("plotly.js v") == 1  # embedded once
    assert "Plotly.newPlot" in text and "every task against sparsity" in text
    nb = nbformat.read(ipynb, as_version=4)
    by_sparsity, by_size, by_category, open_closed = figures(nb)
    titles = [a["text"] for a in by_sparsity["layout"]["annotations"]]
    assert titles == ["factoid: accuracy (strict)",
                      "mmlu:0-shot: accuracy (cloze, length-normalised)",
                      "icraqa: token F1", "icraqa:closed: token F1", "perplexity: perplexity"]
    names = {"magnitude unstructured", "magnitude 2:4", "wanda unstructured", "wanda 2:4"}
    assert curve_names(by_sparsity) == names
    # one legend entry per method across the five panels, one colour per method
    shown = [t["name"] for t in by_sparsity["data"] if t.get("showlegend", True)]
    assert len(shown) == len(set(shown))
    colours = {}
    for t in by_sparsity["data"]:
        if t["name"] in names:
            colours.setdefault(t["name"], set()).add(t["marker"]["color"])
    assert all(len(c) == 1 for c in colours.values())
    assert by_sparsity["layout"]["yaxis5"]["type"] == "log"  # perplexity panel
    ppl_panel = [t for t in by_sparsity["data"] if t.get("yaxis") == "y5"]
    assert ppl_panel and all(y > 1 for t in ppl_panel for y in decode(t["y"]))
    assert curve_names(by_size) == names | {"rtn per-channel"}
    rtn = next(t for t in by_size["data"] if t["name"] == "rtn per-channel")
    xs = decode(rtn["x"])
    assert xs[-1] == 1.0 and all(0 < x < 1 for x in xs[:-1])  # w3, w4, then dense
    cats = [a["text"].split(" · ")[1].split(":")[0] for a in by_category["layout"]["annotations"]]
    assert set(cats) <= {"STEM", "humanities", "social sciences", "other"} and len(cats) >= 2
    assert [a["text"] for a in open_closed["layout"]["annotations"]] == [
        "icraqa: token F1", "icraqa:closed: token F1"]
    table = next(o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", [])
                 if "factoid accuracy" in o.get("data", {}).get("text/html", ""))
    tbody = table.split("<tbody>")[1]
    assert tbody.count("<tr>") == 9  # dense, magnitude and wanda x (20%, 50%, 2:4), rtn w4, w3
    assert "icraqa:closed f1" in table and "perplexity perplexity" in table


@pytest.mark.slow
def test_report_shows_judged_free_form_tasks_and_fluency(tmp_path):
    params = {"model": "tiny-llama", "methods": ["magnitude"], "sparsities": [0.5], "patterns": [],
              "limit": 2, "tasks": ["factoid", "icsum", "instruct"], "ppl_windows": 0,
              "judge": "local:tiny-llama", "store_path": str(tmp_path / "s.sqlite"),
              "dtype": "float32", "progress": False}
    ipynb, html = report.render(params, out_dir=tmp_path, name="r")
    nb = nbformat.read(ipynb, as_version=4)
    [by_sparsity] = figures(nb)
    titles = [a["text"] for a in by_sparsity["layout"]["annotations"]]
    assert titles == ["factoid: accuracy (strict)", "icsum: ROUGE-L F1", "icsum: judge score (1-10)",
                      "instruct: ROUGE-L F1", "instruct: judge score (1-10)"]
    html_out = [o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", [])
                if "text/html" in o.get("data", {})]
    free = next(t for t in html_out if "icsum: per compression" in t)
    assert "unparsed" in free and "order_disagreement" in free and "rougeL" in free
    assert any("icsum by bucket" in t for t in html_out)
    assert any("answer perplexity (dense model)" in t for t in html_out)
    # the local judge scores by expectation: every judgment read, every score on 1-10
    from kickbench.store import Store

    judged = results.frame(Store(tmp_path / "s.sqlite")).query("judge == 'local:tiny-llama'")
    assert set(judged.task) == {"icsum", "instruct"}
    assert (judged[judged.metric == "unparsed"].value == 0).all()
    assert judged[judged.metric == "judge_score"].value.between(1, 10).all()

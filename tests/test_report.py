import re

import nbformat
import pytest

from kickbench import report


def decode(values):
    """Plotly JSON stores numeric arrays as {"dtype", "bdata"} (base64)."""
    import base64

    import numpy as np

    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return values


@pytest.mark.slow
def test_report_notebook_renders_offline_html_with_the_figure(tmp_path):
    params = {"model": "tiny-llama", "sparsities": [0.2, 0.5], "patterns": ["2:4"], "limit": 4,
              "methods": ["magnitude", "wanda", "rtn"], "bits": [4, 3], "nsamples": 2, "seqlen": 32,
              "ppl_windows": 2,
              "store_path": str(tmp_path / "s.sqlite"), "dtype": "float32", "progress": False}
    ipynb, html = report.render(params, out_dir=tmp_path, name="r")
    text = html.read_text()
    assert '<script src="http' not in text and "<script src='http" not in text
    assert not re.search(r'<link[^>]+href="https?://', text)
    assert text.count("plotly.js v") == 1  # embedded once
    assert "Plotly.newPlot" in text and "accuracy (strict) vs sparsity" in text
    nb = nbformat.read(ipynb, as_version=4)
    figures = [o for c in nb.cells for o in c.get("outputs", [])
               if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 4  # accuracy and perplexity (log axis) vs sparsity, then vs size
    acc, ppl, acc_size, ppl_size = (f["data"]["application/vnd.plotly.v1+json"] for f in figures)
    names = {"magnitude unstructured", "magnitude 2:4", "wanda unstructured", "wanda 2:4"}
    curves = [{t["name"] for t in f["data"] if not t["name"].startswith(("dense", "matching"))}
              for f in (acc, ppl)]
    assert curves[0] == names == curves[1]
    assert ppl["layout"]["yaxis"]["type"] == "log"
    assert all(y > 1 for t in ppl["data"] for y in decode(t["y"]))
    assert any(t["name"].startswith("matching band") for t in acc["data"])
    size_curves = {t["name"] for t in acc_size["data"]
                   if not t["name"].startswith(("dense", "matching"))}
    assert size_curves == names | {"rtn per-channel"}
    rtn = next(t for t in acc_size["data"] if t["name"] == "rtn per-channel")
    xs = decode(rtn["x"])
    assert xs[-1] == 1.0 and all(0 < x < 1 for x in xs[:-1])  # w3, w4, then dense
    assert acc_size["layout"]["xaxis"]["title"]["text"].startswith("size")
    table = next(o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", [])
                 if "accuracy 95% CI" in o.get("data", {}).get("text/html", ""))
    tbody = table.split("<tbody>")[1]
    assert tbody.count("<tr>") == 9  # dense, magnitude and wanda x (20%, 50%, 2:4), rtn w4, w3

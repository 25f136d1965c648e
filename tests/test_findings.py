import nbformat
import pytest

from kickbench import report

from test_report import figures


@pytest.mark.slow
def test_findings_notebook_shows_five_findings_each_with_figure_and_numbers(tmp_path):
    params = {"model": "tiny-llama", "large_model": "tiny-gemma3", "factoid_data": "data/factoid.jsonl",
              "ppl_data": "data/heldout_text.jsonl", "calib_data": "data/calibration.jsonl", "limit": 4,
              "large_limit": 4, "ppl_windows": 2, "ppl_window": 64, "nsamples": 2, "seqlen": 32,
              "methods": ["magnitude", "wanda"], "sparsities": [0.3, 0.5], "nm_patterns": ["2:4"],
              "quantizers": ["rtn w4", "rtn w3 g32"], "large_sparsities": [0.5], "dtype": "float32",
              "store_path": str(tmp_path / "s.sqlite"), "progress": False}
    ipynb, html = report.render(params, out_dir=tmp_path, name="f", notebook=report.FINDINGS)
    nb = nbformat.read(ipynb, as_version=4)
    titles = [f["layout"]["title"]["text"] for f in figures(nb)]
    assert [t.split(".")[0] for t in titles] == ["1", "2", "3", "4", "5"]
    notes = [o["data"]["text/markdown"] for c in nb.cells for o in c.get("outputs", [])
             if "text/markdown" in o.get("data", {})]
    assert len(notes) == 5 and all(n.startswith("**What the numbers show.**") for n in notes)
    assert "tiny-gemma3 has 3M parameters" in notes[4]
    fig3 = figures(nb)[2]
    assert {"rtn per-channel", "rtn g32", "magnitude unstructured"} <= {t["name"] for t in fig3["data"]}
    fig5 = figures(nb)[4]
    assert [t["name"] for t in fig5["data"]] == ["tiny-llama (Wanda)", "tiny-gemma3 (Wanda)"]
    text = html.read_text()
    assert "What the numbers show" in text and "kopts" not in text

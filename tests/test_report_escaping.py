"""Model outputs and dataset text reach the HTML report as text, never as live markup
(issue 16), and `report --name` cannot write outside `--out`."""

import json
import sqlite3
from html.parser import HTMLParser

import nbformat
import pytest

from kickbench import cli, report, results

QUESTION = "Who painted <img src=x onerror=alert(1)>?"  # dataset: factoid question
ALIAS = "<script>alert(2)</script>"                     # dataset: factoid answer alias
ANSWER = "<img src=x onerror=alert(3)><script>alert(4)</script>"  # model: compressed answer
CATEGORY = "<img src=x onerror=alert(5)>"               # dataset: MMLU category
ESCAPED = {  # each payload as inert text: it must be in the report, so nothing was dropped
    "question": "&lt;img src=x onerror=alert(1)&gt;",
    "alias": "&lt;script&gt;alert(2)&lt;/script&gt;",
    "answer": "&lt;img src=x onerror=alert(3)&gt;&lt;script&gt;alert(4)&lt;/script&gt;",
    "category": "&lt;img src=x onerror=alert(5)&gt;",
}


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of every <script>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def assert_inert(text: str) -> None:
    """No handler, no injected <img>, no script that runs a payload."""
    page = Elements()
    page.feed(text)
    handlers = [(tag, a) for tag, attrs in page.tags for a in attrs if a.lower().startswith("on")]
    assert handlers == []
    assert [attrs for tag, attrs in page.tags if tag == "img" and attrs.get("src") == "x"] == []
    for script in page.scripts:
        # a Plotly.newPlot script carries the figure's (escaped) text as JSON strings
        rest = script.replace("&lt;img src=x onerror=alert(", "").replace("&lt;script&gt;alert(", "")
        assert "alert(" not in rest, script[:200]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def hostile_data(tmp_path):
    factoid = write_jsonl(tmp_path / "factoid.jsonl", [
        {"id": "q0", "question": QUESTION, "answers": [ALIAS, "Paris"]},
        *({"id": f"q{i}", "question": f"What is {i} plus {i}?", "answers": [str(2 * i)]}
          for i in range(1, 4))])
    mmlu = write_jsonl(tmp_path / "mmlu.jsonl", [
        {"subject": subject, "category": category, "question": f"Question {i} about {subject}?",
         "choices": ["one", "two", "three", "four"], "answer": i % 4}
        for i, (subject, category) in enumerate([("astronomy", CATEGORY), ("virology", "other")] * 2)])
    return {"factoid": str(factoid), "mmlu": str(mmlu)}


def plant_answers(store_path) -> None:
    """The dense run answers q0 right and the compressed run answers it with the payload, so
    the fluent-but-wrong table shows a hostile model answer (a tiny random model answers noise)."""
    from kickbench.store import Store

    store = Store(store_path)
    runs = results.frame(store).query("task == 'factoid'").drop_duplicates("key")
    store.close()
    [dense] = runs[runs.method == "dense"].key
    [compressed] = runs[runs.method == "magnitude"].key
    db = sqlite3.connect(store_path)
    with db:
        for key, output, right in ((dense, " Paris", 1.0), (compressed, " " + ANSWER, 0.0)):
            (metrics,) = db.execute("SELECT metrics FROM samples WHERE key=? AND idx=0", (key,)).fetchone()
            metrics = {**json.loads(metrics), "accuracy": right, "exact_match": right,
                       "haystack_accuracy": right}
            db.execute("UPDATE samples SET output=?, metrics=? WHERE key=? AND idx=0",
                       (output, json.dumps(metrics), key))
    db.close()


@pytest.mark.slow
def test_hostile_model_and_dataset_text_is_escaped_in_the_html_report(tmp_path):
    store_path = tmp_path / "s.sqlite"
    params = {"model": "tiny-llama", "methods": ["magnitude"], "sparsities": [0.5], "patterns": [],
              "limit": 4, "nsamples": 2, "seqlen": 32, "tasks": ["factoid", "mmlu:0-shot"],
              "data": hostile_data(tmp_path), "ppl_windows": 0, "store_path": str(store_path),
              "dtype": "float32", "progress": False}
    report.render(params, out_dir=tmp_path, name="first")
    plant_answers(store_path)
    ipynb, html = report.render(params, out_dir=tmp_path, name="r")  # reads the store

    text = html.read_text(encoding="utf-8")
    assert "Plotly.newPlot" in text  # the figures survived
    assert_inert(text)
    for what, escaped in ESCAPED.items():
        assert escaped in text, what
    nb = nbformat.read(ipynb, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    lost = next(o["data"]["text/html"] for o in outputs
                if "compressed answer" in o.get("data", {}).get("text/html", ""))
    assert ESCAPED["question"] in lost and ESCAPED["alias"] in lost and ESCAPED["answer"] in lost
    assert "<img" not in lost and "<script" not in lost
    by_category = next(o["data"]["application/vnd.plotly.v1+json"] for o in outputs
                       if "by category" in json.dumps(o.get("data", {}).get(
                           "application/vnd.plotly.v1+json", {}).get("layout", {}).get("title", "")))
    titles = [a["text"] for a in by_category["layout"]["annotations"]]
    assert f"mmlu:0-shot · {ESCAPED['category']}: accuracy (cloze, length-normalised)" in titles
    assert not any("<" in t for t in titles)


def test_escaped_styler_escapes_cells_labels_and_caption():
    import pandas as pd

    frame = pd.DataFrame({CATEGORY: [ANSWER, 0.12345]}, index=[QUESTION, "b"])
    out = report.escaped(frame.style.format(precision=3, escape="html").set_caption(ALIAS)).to_html()
    assert "<img" not in out and "<script" not in out
    assert ESCAPED["category"] in out and ESCAPED["answer"] in out and ESCAPED["alias"] in out
    assert "0.123" in out  # precision kept


def test_md_escape_makes_markdown_inert():
    from nbconvert.filters.markdown import markdown2html

    for payload in (QUESTION, ALIAS, ANSWER, "[x](javascript:alert(6)) **b** _i_ `c` # h"):
        out = markdown2html(f"**{report.md_escape(payload)}** on factoid")
        assert "<img" not in out and "<script" not in out and "<a " not in out and "<em>" not in out
        assert out.count("<strong>") == 1
    assert report.md_escape("magnitude 50%") == "magnitude 50%"
    assert markdown2html(report.md_escape("a_b *c* 0.5 (d)")).strip() == "<p>a_b *c* 0.5 (d)</p>"


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "sub/evil", "..", "a\\b"])
def test_render_refuses_a_name_that_leaves_the_output_folder(tmp_path, name, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("papermill ran"))
    with pytest.raises(ValueError, match=r"file name stem without '/' or '\.\.'"):
        report.render({}, out_dir=tmp_path / "out", name=name)
    assert not (tmp_path / "out").exists()


def test_cli_report_refuses_a_name_with_dotdot_before_papermill(tmp_path, monkeypatch, capsys):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("papermill ran"))
    rc = cli.main(["report", "--model", "tiny-llama", "--tasks", "factoid", "--name", "../evil",
                   "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'../evil'" in err and "without '/' or '..'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "evil.ipynb").exists() and not (tmp_path / "evil.html").exists()

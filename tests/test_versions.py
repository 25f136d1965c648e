"""Result keys change exactly when a number could: every component that makes numbers has a
version, its code is hashed, and a change without a bump fails here (kickbench/versions.py)."""

import json

import pytest

from kickbench import sweep, versions
from kickbench.compress import gptq, registry, rtn
from kickbench.compress.spec import CompressionSpec
from kickbench.session import Session
from kickbench.tasks import TASKS, TaskSpec, factoid, mmlu, perplexity


def test_every_component_matches_the_hash_recorded_for_its_version():
    found = versions.problems()
    assert not found, "\n".join(found)


def test_the_recorded_table_covers_tasks_compressors_engine_stats_and_judge():
    names = {c.name for c in versions.components()}
    assert {f"task:{t}" for t in TASKS} <= names
    assert {f"compressor:{m}" for m in [*registry.METHODS, *registry.ALLOCATORS]
            if not m.startswith("toy")} <= names
    assert {"engine", "stats", "fluency", "judge"} <= names


def test_components_list_their_own_file_and_the_helpers_they_use():
    comps = {c.name: c for c in versions.components()}
    assert comps["task:factoid"].sources[:1] == ("tasks/factoid.py",)
    assert {"tasks/text.py", "tasks/data.py"} <= set(comps["task:factoid"].sources)
    assert "tasks/metrics.py" not in comps["task:factoid"].sources  # names, not numbers
    assert "tasks/text.py" not in comps["task:mmlu"].sources  # mmlu does not import it
    wanda = set(comps["compressor:wanda"].sources)
    assert {"compress/wanda.py", "compress/masks.py", "compress/calibration.py",
            "compress/layers.py", "compress/size.py", "compress/__init__.py:apply"} <= wanda
    assert "compress/gptq.py" not in wanda and "compress/registry.py" not in wanda
    assert {"compress/hessian.py", "compress/obs.py", "compress/quant.py"} <= \
        set(comps["compressor:gptq"].sources)
    assert "compress/wanda.py" in comps["compressor:owl"].sources  # OWL ranks by Wanda scores
    assert comps["compressor:bnb-nf4"].home.startswith("kickbench/compress/bnb.py")
    assert comps["stats"].sources == ("stats.py", "sweep.py:_score")


def test_each_registered_method_is_found_in_its_own_file():
    for name, entry in [*registry.METHODS.items(), *registry.ALLOCATORS.items()]:
        module = versions.entry_module(entry)
        if name.startswith("toy"):
            continue
        assert module.__name__ == f"kickbench.compress.{name.split('-')[0]}", name
        assert versions.compressor_version(name) == module.VERSION


# -- normalisation ---------------------------------------------------------------------------

CODE = '''"""Module doc."""
VERSION = 3


def f(x, y):
    """Doc."""
    return x + y  # add


def g():
    return 2
'''


def digest(text: str, name: str = "") -> str:
    lines = versions.normalised_lines(text)
    if name:
        import ast

        first, last = versions._span(ast.parse(text), name, name)
        lines = [(r, t) for r, t in lines if first <= r <= last]
    return "\n".join(t for _, t in lines)


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("# add", "# sum of both"),
    lambda s: s.replace('"""Doc."""', '"""Another doc,\n    on two lines."""'),
    lambda s: s.replace('    """Doc."""\n', ""),
    lambda s: s.replace('"""Module doc."""', '"""Changed."""'),
    lambda s: s.replace("VERSION = 3", "VERSION = 4"),
    lambda s: s.replace("def f(x, y):", "def f(\n        x,\n        y):"),
    lambda s: s.replace("\n\n\ndef g", "\n\n\n\n# a comment line\ndef g"),
    lambda s: s.replace("\n    ", "\n  "),  # indentation width
], ids=["comment", "docstring", "docstring removed", "module doc", "version line", "wrapping",
        "blank lines", "indent width"])
def test_what_is_not_a_change(edit):
    assert digest(edit(CODE)) == digest(CODE)


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("x + y", "x - y"),
    lambda s: s.replace("return 2", "return 3"),
    lambda s: s.replace("def f(x, y):", "def f(x, y=1):"),
    lambda s: s.replace("    return x + y  # add", "    if x:\n        return x + y"),
], ids=["operator", "constant", "default", "structure"])
def test_what_is_a_change(edit):
    assert digest(edit(CODE)) != digest(CODE)


def test_a_selected_definition_ignores_the_rest_of_its_file():
    assert digest(CODE, "f") == digest(CODE.replace("return 2", "return 3"), "f")
    assert digest(CODE, "f") != digest(CODE.replace("x + y", "x * y"), "f")


# -- the check and --record ------------------------------------------------------------------

@pytest.fixture
def package(tmp_path, monkeypatch):
    """A one-file package with one component, its table in tmp_path."""
    (tmp_path / "scorer.py").write_text(CODE)
    monkeypatch.setattr(versions, "PACKAGE", tmp_path)
    table = tmp_path / "hashes.json"
    state = {"version": 1}
    monkeypatch.setattr(versions, "components", lambda: [
        versions.Component("task:toy", state["version"], ("scorer.py", "scorer.py:g"),
                           "kickbench/tasks/toy.py (VERSION)")])
    return tmp_path / "scorer.py", table, state


def test_a_change_without_a_bump_fails_naming_the_file_and_the_fix(package):
    source, table, state = package
    assert versions.record(path=table) == []
    assert versions.problems(json.loads(table.read_text())) == []
    source.write_text(CODE.replace("# add", "# a new comment"))
    assert versions.problems(json.loads(table.read_text())) == []
    source.write_text(CODE.replace("x + y", "x * y"))
    [problem] = versions.problems(json.loads(table.read_text()))
    assert problem.startswith("component task:toy changed (kickbench/scorer.py): bump its "
                              "VERSION in kickbench/tasks/toy.py (VERSION) and run "
                              "`python -m kickbench.versions --record`")
    # --record will not silence it by overwriting the hash of version 1
    [refused] = versions.record(path=table)
    assert "bump its VERSION" in refused and "--same-numbers task:toy" in refused
    assert versions.problems(json.loads(table.read_text()))
    # bumping alone is not enough: the new version needs its hash
    state["version"] = 2
    [problem] = versions.problems(json.loads(table.read_text()))
    assert "version 2 has no recorded hash" in problem
    assert versions.record(path=table) == []
    recorded = json.loads(table.read_text())
    assert set(recorded["task:toy"]) == {"1", "2"}  # the old version's hash stays on record
    assert versions.problems(recorded) == []
    # going back to version 1 with version 2's code is a change of version 1; below: refused
    state["version"] = 1
    assert "component task:toy changed" in versions.problems(recorded)[0]
    state["version"] = 0
    assert "version 0 is below the recorded 2" in versions.problems(recorded)[0]
    assert "below a recorded one" in versions.record(path=table)[0]


def test_same_numbers_rerecords_a_change_that_cannot_alter_a_number(package):
    source, table, state = package
    versions.record(path=table)
    source.write_text(CODE.replace("return 2", "return 1 + 1"))
    assert versions.problems(json.loads(table.read_text()))
    assert versions.record(("task:other",), path=table)  # naming another component: refused
    assert versions.record(("task:toy",), path=table) == []
    assert versions.problems(json.loads(table.read_text())) == []


# -- keys --------------------------------------------------------------------------------------

def test_keys_hold_the_versions_of_only_the_components_a_run_uses():
    assert versions.used(CompressionSpec("dense"), factoid) == {
        "task": factoid.VERSION, "engine": versions.ENGINE, "stats": versions.STATS,
        "fluency": versions.FLUENCY}
    assert versions.used(CompressionSpec("wanda", 0.5), mmlu) == {
        "task": mmlu.VERSION, "engine": versions.ENGINE, "stats": versions.STATS,
        "compressor": {"wanda": 1}}
    assert versions.used(CompressionSpec("wanda", 0.5, layerwise="owl"), perplexity)["compressor"] \
        == {"wanda": 1, "owl": 1}
    assert versions.used(CompressionSpec("bnb-nf4"), perplexity)["compressor"] == {"bnb-nf4": 1}


@pytest.fixture
def small_task(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"{i} plus one?",
                                        "answers": [str(i + 1)]}) + "\n" for i in range(3)))
    return TaskSpec("factoid", data=str(path))


def keys(lm, task, specs):
    session = Session()
    data_hash = session.items(task)[1]
    return [sweep.run_key(lm, s, task, data_hash, 0, session)[0] for s in specs]


def test_a_compressor_version_moves_only_its_own_results(tiny, small_task, monkeypatch):
    lm = tiny("tiny-llama")
    specs = [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5), CompressionSpec("rtn", bits=4)]
    before = keys(lm, small_task, specs)
    monkeypatch.setattr(gptq, "VERSION", 2)  # a GPTQ change: nobody else's key moves
    assert keys(lm, small_task, specs) == before
    monkeypatch.setattr(rtn, "VERSION", 2)
    after = keys(lm, small_task, specs)
    assert after[:2] == before[:2] and after[2] != before[2]


def test_a_task_version_changes_the_run_key(tiny, small_task, monkeypatch):
    lm = tiny("tiny-llama")
    specs = [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)]
    before = keys(lm, small_task, specs)
    monkeypatch.setattr(factoid, "VERSION", factoid.VERSION + 1)
    after = keys(lm, small_task, specs)
    assert all(a != b for a, b in zip(after, before))
    monkeypatch.setattr(versions, "ENGINE", versions.ENGINE + 1)
    assert all(a != b for a, b in zip(keys(lm, small_task, specs), after))


def test_key_fields_say_what_made_the_number(tiny, small_task):
    lm = tiny("tiny-llama")
    session = Session()
    _, fields = sweep.run_key(lm, CompressionSpec("magnitude", 0.5), small_task,
                              session.items(small_task)[1], 0, session)
    assert fields["scheme"] == versions.KEY_SCHEME
    assert fields["versions"]["compressor"] == {"magnitude": 1}
    assert fields["aggregates"]["answer_ppl"] == "ppl" and fields["aggregates"]["accuracy"] == "mean"
    assert "kickbench" not in fields  # the package version never moved; components' do

"""Where every number came from: provenance is appended, never overwritten; stores made by
older code are kept and told apart; the model's fingerprint covers tokenizer, chat template and
config; one default dtype per device type whatever the processor's flags."""

import copy
import json
import sqlite3

import pytest
import torch

from kickbench import models, sweep, versions
from kickbench.compress.spec import CompressionSpec
from kickbench.store import Store
from kickbench.tasks import TaskSpec


@pytest.fixture
def small_data(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus one?",
                                        "answers": [str(i + 1)]}) + "\n" for i in range(8)))
    return TaskSpec("factoid", data=str(path))


def settings(limit):
    return sweep.Settings(limit=limit, device="cpu", dtype="float32", batch_size=4, progress=False)


def test_extending_a_run_appends_provenance_and_older_samples_keep_theirs(store, small_data):
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("dense")], [small_data])
    key = sweep.execute(runs, store, settings(3)).key.iloc[0]
    first = store.provenance(key)
    assert len(first) == 1
    sweep.execute(runs, store, settings(6))
    both = store.provenance(key)
    assert len(both) == 2 and both[0] == first[0]  # the first row survives unchanged
    one, two = both[0]["id"], both[1]["id"]
    assert store.sample_provenance(key) == {0: one, 1: one, 2: one, 3: two, 4: two, 5: two}
    assert both[1]["meta"]["time"] > both[0]["meta"]["time"]
    assert store.run(key)["meta"] == both[1]["meta"]  # the run shows its latest meta
    meta = both[0]["meta"]
    assert meta["key_scheme"] == versions.KEY_SCHEME and meta["key_fields"]["versions"]["task"] == small_data.module.VERSION
    assert set(meta["model_fingerprints"]) == {"weights", "tokenizer", "config"}
    # nothing new to compute: no new provenance
    sweep.execute(runs, store, settings(6))
    assert len(store.provenance(key)) == 2


def test_samples_follow_the_put_run_of_their_store(store):
    item = {"id": "a"}
    record = lambda i: {"idx": i, "item": item, "prompt": "p", "output": "o", "metrics": {},
                        "new_tokens": 1}
    p1 = store.put_run("k", "m", {}, "t", {"git": "one"})
    store.add_samples("k", [record(0)])
    p2 = store.put_run("k", "m", {}, "t", {"git": "two"})
    store.add_samples("k", [record(1)])
    store.add_samples("k", [record(2)], provenance_id=p1)
    assert p2 > p1
    assert store.sample_provenance("k") == {0: p1, 1: p2, 2: p1}
    assert [p["meta"]["git"] for p in store.provenance("k")] == ["one", "two"]
    other = Store(store.path)  # another process: samples go under the run's latest provenance
    other.add_samples("k", [record(3)])
    assert store.sample_provenance("k")[3] == p2
    other.close()


OLD_SCHEMA = """
CREATE TABLE runs (key TEXT PRIMARY KEY, model TEXT, spec TEXT, task TEXT, meta TEXT, created REAL);
CREATE TABLE samples (key TEXT, idx INTEGER, item_id TEXT, prompt TEXT, output TEXT, item TEXT,
    metrics TEXT, new_tokens INTEGER, PRIMARY KEY (key, idx));
CREATE TABLE scores (key TEXT, n INTEGER, metric TEXT, value REAL, ci_low REAL, ci_high REAL,
    created REAL, PRIMARY KEY (key, n, metric));
CREATE TABLE judgments (hash TEXT PRIMARY KEY, judge TEXT, reply TEXT, created REAL);
"""


def test_an_old_store_is_migrated_kept_and_told_apart(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO runs VALUES ('old', 'm', '{}', 'factoid', ?, 0)",
               (json.dumps({"key_fields": {"kickbench": "0.1.0", "task_version": 1}}),))
    db.execute("INSERT INTO samples VALUES ('old', 0, 'a', 'p', 'o', '{\"id\": \"a\"}', '{}', 1)")
    db.execute("INSERT INTO scores VALUES ('old', 1, 'accuracy', 0.5, 0.4, 0.6, 0)")
    db.commit()
    db.close()
    store = Store(path)
    assert store.sample_provenance("old") == {0: None}  # made before provenance: unknown
    assert len(store.samples("old")) == 1
    store.put_run("new", "m", {}, "factoid", {"key_scheme": versions.KEY_SCHEME})
    store.put_scores("new", 1, {"accuracy": (0.7, 0.6, 0.8)})
    assert store.key_schemes() == {1: 1, versions.KEY_SCHEME: 1}
    assert [r["key"] for r in store.rows()] == ["old", "new"]  # every row is kept
    assert [r["key_scheme"] for r in store.rows()] == [1, versions.KEY_SCHEME]
    assert [r["key"] for r in store.rows(key_scheme=versions.KEY_SCHEME)] == ["new"]
    store.close()
    Store(path).close()  # opening a migrated store again changes nothing


def test_sweep_results_never_mix_in_rows_of_older_code(tmp_path, small_data):
    store = Store(tmp_path / "s.sqlite")
    store.put_run("old", "tiny-llama", CompressionSpec("dense").key(), "factoid",
                  {"key_fields": {"kickbench": "0.1.0"}, "template": "fewshot"})
    store.put_scores("old", 3, {"accuracy": (0.9, 0.8, 1.0)})
    runs = sweep.plan(["tiny-llama"], [CompressionSpec("dense")], [small_data])
    frame = sweep.execute(runs, store, settings(3))
    assert "old" not in set(frame.key) and len(set(frame.key)) == 1
    store.close()


# -- the model fingerprint ---------------------------------------------------------------------

def fresh(lm, tokenizer=None):
    """The same model (and tokenizer, unless given), fingerprints not yet computed."""
    return models.LoadedModel(lm.name, lm.model, tokenizer or lm.tokenizer, lm.device, lm.dtype)


def test_fingerprint_covers_tokenizer_chat_template_and_config(tiny):
    lm = tiny("tiny-llama")
    tok = copy.deepcopy(lm.tokenizer)  # the session's tokenizer is shared: edit a copy
    base = fresh(lm, tok)
    assert base.fingerprint == fresh(lm).fingerprint
    assert base.fingerprints["weights"] == models.weights_fingerprint(lm.model)
    assert base.weights_fingerprint == base.fingerprints["weights"]
    template = tok.chat_template
    tok.chat_template = (template or "") + "{# changed #}"
    assert fresh(lm, tok).fingerprint != base.fingerprint
    assert fresh(lm, tok).fingerprints["tokenizer"] != base.fingerprints["tokenizer"]
    tok.chat_template = template
    assert fresh(lm, tok).fingerprint == base.fingerprint
    assert tok.add_tokens(["<kickbench-test-token>"]) == 1
    assert fresh(lm, tok).fingerprints["tokenizer"] != base.fingerprints["tokenizer"]
    config = lm.model.config
    eps = config.rms_norm_eps
    try:
        config.rms_norm_eps = eps * 2
        assert fresh(lm).fingerprints["config"] != base.fingerprints["config"]
        assert fresh(lm).fingerprint != base.fingerprint
    finally:
        config.rms_norm_eps = eps
    # what varies by machine or by call is left out: the folder it came from, per-call padding
    name, architectures = config._name_or_path, config.architectures
    try:
        config._name_or_path = "/somewhere/else"
        config.architectures = ["LlamaForCausalLM"]  # what save_pretrained writes into it
        assert fresh(lm).fingerprints["config"] == base.fingerprints["config"]
    finally:
        config._name_or_path, config.architectures = name, architectures
    padded = copy.deepcopy(lm.tokenizer)
    padded(["a", "a longer text here"], padding=True, truncation=True, max_length=4)
    assert fresh(lm, padded).fingerprint == base.fingerprint


def test_fingerprint_of_a_loaded_model_is_stable(tiny):
    a = models.load("tiny-llama", device="cpu", dtype="float32")
    b = models.load("tiny-llama", device="cpu", dtype="float32")
    assert a.fingerprint == b.fingerprint
    assert fresh(tiny("tiny-llama")).fingerprints == a.fingerprints


# -- one default dtype per device type -----------------------------------------------------------

@pytest.mark.parametrize("native_bf16", [True, False])
def test_one_default_dtype_per_device_type_whatever_the_cpu_flags(monkeypatch, native_bf16):
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(models.Path, "read_text", lambda self, *a, **k:
                        "flags: avx2 avx512_bf16 amx_bf16" if native_bf16 else "flags: avx2")
    assert models.default_dtype(torch.device("cpu")) == torch.float32
    assert models.default_dtype(torch.device("cuda")) == torch.bfloat16
    assert models.default_dtype("cpu") == torch.float32


def test_a_cpu_load_defaults_to_float32_even_with_native_bf16(monkeypatch):
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    lm = models.load("tiny-llama", device="cpu")
    assert lm.dtype == torch.float32 and next(lm.model.parameters()).dtype == torch.float32
    assert models.load("tiny-llama", device="cpu", dtype="bfloat16").dtype == torch.bfloat16

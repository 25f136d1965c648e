"""Sweeps on a local Ray instance (loopback only, stopped at the end of this module): the same
store contents as a local run, a worker killed mid-unit, a unit whose files a worker lacks."""

import json
import os
import shutil
import sqlite3
import time

import pytest

ray = pytest.importorskip("ray")

from kickbench import models, sweep  # noqa: E402
from kickbench.compress.spec import CompressionSpec  # noqa: E402
from kickbench.executors import RayExecutor, UnitsFailed, content_hash, executor  # noqa: E402
from kickbench.store import Store  # noqa: E402
from kickbench.tasks import TaskSpec  # noqa: E402

SPECS = [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)]
SETTINGS = sweep.Settings(device="cpu", dtype="float32", batch_size=4, progress=False)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    qa = d / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus one?",
                                      "answers": [str(i + 1)]}) + "\n" for i in range(8)))
    text = d / "text.jsonl"
    text.write_text(json.dumps({"id": "t", "text": " ".join(
        f"The river number {i} runs to the sea past the town." for i in range(40))}) + "\n")
    return [TaskSpec("factoid", data=str(qa)), TaskSpec("perplexity", data=str(text), window=64)]


@pytest.fixture(scope="module")
def reference(tasks, tmp_path_factory):
    """The plan run in this process: what every Ray run must store."""
    store = Store(tmp_path_factory.mktemp("ref") / "results.sqlite")
    sweep.execute(sweep.plan(["tiny-llama"], SPECS, tasks), store, SETTINGS)
    yield contents(store)
    store.close()


def contents(store: Store) -> dict:
    """Keys, samples and scores (not times, not provenance ids)."""
    db = store.db
    return {
        "runs": sorted(r[0] for r in db.execute("SELECT key FROM runs")),
        "samples": sorted(db.execute("SELECT key, idx, item_id, prompt, output, item, metrics, "
                                     "new_tokens FROM samples")),
        "scores": sorted(db.execute("SELECT key, n, metric, value, ci_low, ci_high FROM scores")),
    }


def test_executor_choice_is_validated():
    assert executor("local") is None
    assert executor("ray", "auto", 1, 2) == RayExecutor("auto", 1, 2)
    with pytest.raises(ValueError, match="--address applies"):
        executor("local", "auto")
    with pytest.raises(ValueError, match="unknown executor"):
        executor("dask")


def test_content_hash_of_files_and_folders(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.txt").write_text("x")
    before = content_hash(tmp_path / "m")
    (tmp_path / "m" / "a.txt").write_text("y")
    assert content_hash(tmp_path / "m") != before


@pytest.mark.slow
def test_ray_run_stores_what_a_local_run_stores_and_resumes(local_ray, tasks, reference, tmp_path):
    store = Store(tmp_path / "results.sqlite")
    seen = []
    settings = sweep.Settings(device="cpu", dtype="float32", batch_size=4, progress=False,
                              on_progress=lambda d, done, total: seen.append((d, done, total)),
                              executor=RayExecutor())
    frame = sweep.execute(sweep.plan(["tiny-llama"], SPECS, tasks), store, settings)
    assert contents(store) == reference
    assert set(frame.task) == {"factoid", "perplexity"} and len(set(frame.key)) == 4
    assert seen and all(done <= total for _, done, total in seen)
    # nothing missing: the units find every score in the snapshot, nothing is stored again
    n_prov = store.db.execute("SELECT count(*) FROM provenance").fetchone()[0]
    again = sweep.execute(sweep.plan(["tiny-llama"], SPECS, tasks), store, SETTINGS,
                          executor=RayExecutor())
    assert store.db.execute("SELECT count(*) FROM provenance").fetchone()[0] == n_prov
    assert sorted(again.key) == sorted(frame.key)


@pytest.mark.slow
def test_worker_killed_mid_unit_redoes_only_batches_not_stored(local_ray, tasks, reference,
                                                               tmp_path):
    path, marker = tmp_path / "results.sqlite", tmp_path / "killed"

    def kill_once_after_first_stored_batch(record):
        if record[0] != "add_samples":
            return
        try:
            open(marker, "x").close()  # only the first worker to get here, only once
        except FileExistsError:
            return
        key = record[1][0]
        deadline = time.time() + 20
        with sqlite3.connect(path) as db:  # wait until the driver has stored this batch
            while time.time() < deadline and not db.execute(
                    "SELECT count(*) FROM samples WHERE key=?", (key,)).fetchone()[0]:
                time.sleep(0.05)
        os.kill(os.getpid(), 9)

    store = Store(path)
    sweep.execute(sweep.plan(["tiny-llama"], SPECS, tasks), store, SETTINGS,
                  executor=RayExecutor(hook=kill_once_after_first_stored_batch))
    assert marker.exists()
    assert contents(store) == reference
    # the killed unit's first batch keeps the first attempt's provenance (never regenerated);
    # the batches after it were made by the second attempt
    # (a run's provenance also holds later stages, e.g. the KL from dense: count the rows its
    # samples were made under)
    made = {k: list(store.sample_provenance(k).values()) for k in reference["runs"]}
    killed = [k for k, ids in made.items() if len(set(ids)) > 1]
    assert len(killed) == 1
    made_by = made[killed[0]]
    first, second = sorted(set(made_by))
    assert made_by[:made_by.count(first)] == [first] * made_by.count(first)


@pytest.mark.slow
def test_unit_whose_model_folder_is_missing_on_the_worker_fails_clearly(local_ray, tasks,
                                                                       reference, tmp_path):
    folder = tmp_path / "tiny-copy"
    lm = models.load("tiny-llama", device="cpu", dtype="float32")
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)

    def node_without_the_folder(record):  # this "node" lacks the folder the driver hashed
        if record[0] == "start" and record[1][0] == str(folder):
            shutil.rmtree(folder)

    store = Store(tmp_path / "results.sqlite")
    runs = sweep.plan([str(folder), "tiny-llama"], SPECS[:1], tasks[:1])
    with pytest.raises(UnitsFailed, match="does not exist on worker node") as err:
        sweep.execute(runs, store, SETTINGS, executor=RayExecutor(hook=node_without_the_folder))
    assert len(err.value.failures) == 1 and err.value.failures[0]["model"] == str(folder)
    # the other unit completed: tiny-llama's dense factoid run is stored, as locally
    done = {r[0] for r in store.db.execute("SELECT key FROM scores")}
    assert done and done <= set(reference["runs"])


# The driver process: the CLI, with the store write patched to SIGKILL the driver right after
# the first batch is stored (os._exit would let Python tidy up; SIGKILL does not).
DRIVER_KILLED_AFTER_FIRST_BATCH = """
import os, sys
from kickbench import executors
from kickbench.cli import main
real = executors.apply
def apply(store, record):
    real(store, record)
    if record[0] == "add_samples":
        os.kill(os.getpid(), 9)
executors.apply = apply
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_driver_killed_mid_sweep_then_same_command_redoes_no_stored_batch(local_ray, tasks,
                                                                          reference, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "results.sqlite"
    argv = ["eval", "--model", "tiny-llama", "--method", "magnitude", "--sparsity", "0.5",
            "--task", "factoid", "--data", tasks[0].data, "--batch-size", "4", "--dtype",
            "float32", "--device", "cpu", "--store", str(path), "--executor", "ray",
            "--address", ray.get_runtime_context().gcs_address]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    killed = subprocess.run([sys.executable, "-c", DRIVER_KILLED_AFTER_FIRST_BATCH, *argv],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT key, idx, provenance_id FROM samples").fetchall()
    assert len(before) == 4  # one batch of one unit reached the store before the kill

    again = subprocess.run([sys.executable, "-m", "kickbench.cli", *argv], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    store = Store(path)
    got = contents(store)
    factoid_keys = set(got["runs"])
    assert len(factoid_keys) == 2 and factoid_keys <= set(reference["runs"])
    assert got["samples"] == [s for s in reference["samples"] if s[0] in factoid_keys]
    assert got["scores"] == [s for s in reference["scores"] if s[0] in factoid_keys]
    # the stored batch kept the killed run's provenance: it was not generated again
    key = before[0][0]
    made_by = store.sample_provenance(key)
    assert all(made_by[idx] == pid for _, idx, pid in before)
    assert len(set(made_by.values())) == 2  # the rest of the run was made by the second run


def test_findings_takes_the_executor_flags(monkeypatch, tmp_path, capsys):
    from kickbench import cli, report

    assert cli.main(["findings", "--address", "auto", "--out", str(tmp_path)]) == 2
    assert "--address applies to --executor ray" in capsys.readouterr().err
    assert cli.main(["findings", "--executor", "ray", "--cpus-per-unit", "0",
                     "--out", str(tmp_path)]) == 2
    assert "--cpus-per-unit must be" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(report, "render", lambda params, **kw: (seen.update(params), (
        tmp_path / "f.ipynb", tmp_path / "f.html"))[1])
    assert cli.main(["findings", "--executor", "ray", "--address", "auto", "--gpus-per-unit",
                     "1", "--out", str(tmp_path)]) == 0
    assert {k: seen[k] for k in ("executor", "address", "gpus_per_unit", "cpus_per_unit")} == {
        "executor": "ray", "address": "auto", "gpus_per_unit": 1.0, "cpus_per_unit": 1.0}
    import nbformat

    nb = nbformat.read(report.FINDINGS, as_version=4)
    declared = report.notebook_parameters(nb) if hasattr(report, "notebook_parameters") else None
    source = "".join(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert all(f"\n{k} = " in source for k in ("executor", "address", "gpus_per_unit",
                                                 "cpus_per_unit")), declared


@pytest.mark.slow
def test_workbench_runs_on_a_cluster_address_like_in_process(local_ray, tasks, reference,
                                                            tmp_path):
    from kickbench.ui import Workbench

    store = Store(tmp_path / "results.sqlite")
    wb = Workbench(model="tiny-llama", tasks=("factoid",), limit=8, store=store,
                   data={"factoid": tasks[0].data}, batch_size=4, dtype="float32", device="cpu",
                   background=False, address=ray.get_runtime_context().gcs_address)
    wb.method.value, wb.sparsity.value = "magnitude", 0.5
    seen = []
    real = wb._on_progress
    wb._on_progress = lambda *a: (seen.append(a), real(*a))[1]
    wb.run()
    assert wb.error is None, wb.error
    got = contents(store)
    assert len(got["runs"]) == 2 and set(got["runs"]) <= set(reference["runs"])
    assert got["samples"] == [s for s in reference["samples"] if s[0] in set(got["runs"])]
    assert seen and set(wb.results.label) == {"dense", "magnitude 50%"}  # progress and chart
    assert len(wb.figure.data) > 0


@pytest.mark.slow
def test_cancel_on_the_driver_stops_the_units_and_keeps_stored_batches(local_ray, tasks,
                                                                       reference, tmp_path):
    store = Store(tmp_path / "results.sqlite")

    def cancel_once_something_is_stored(desc, done, total):
        if store.db.execute("SELECT count(*) FROM samples").fetchone()[0]:
            raise sweep.Cancelled("stop")  # what the workbench's Cancel and Ctrl-C amount to

    settings = sweep.Settings(device="cpu", dtype="float32", batch_size=4, progress=False,
                              on_progress=cancel_once_something_is_stored)
    runs = sweep.plan(["tiny-llama"], SPECS, tasks)
    with pytest.raises(sweep.Cancelled):
        sweep.execute(runs, store, settings, executor=RayExecutor())
    kept = store.db.execute("SELECT key, idx, provenance_id FROM samples").fetchall()
    assert kept and len(kept) < len(reference["samples"])
    sweep.execute(runs, store, SETTINGS, executor=RayExecutor())
    assert contents(store) == reference
    assert all(store.sample_provenance(k)[i] == pid for k, i, pid in kept)  # not regenerated

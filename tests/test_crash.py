"""Crashes with real processes: `kickbench eval` killed with SIGKILL in the middle of
generation and in the middle of compression, then rerun; two processes sweeping into one
store at once. The store must keep every finished batch untouched (same rowid, same text), the
rerun must add exactly the missing samples, and the final samples and scores must equal an
uninterrupted run's in another store."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

N = 12  # factoid items per run
# a tiny random model whose greedy answers differ between items and between dense and pruned
# (tiny-llama answers "::::" to everything, which would make every comparison below trivial)
MODEL = "tiny-mistral"
# sparsegpt on the tiny model: enough calibration that compressing takes a while to kill in
NSAMPLES, SEQLEN = 384, 128
# one thread per process: the same arithmetic in every run (and two processes share 2 cores)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
WORDS = ("the river crossed a quiet valley where farmers kept old stone walls and the morning "
         "light fell on fields of barley while children walked to a school near the bridge").split()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    data, calib = root / "factoid.jsonl", root / "calib.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "question": "Which number comes after {i}?", '
                            f'"answers": ["{i + 1}"]}}\n' for i in range(N)))
    calib.write_text("".join('{"text": "%s"}\n' % " ".join(WORDS[(7 * d + j) % len(WORDS)]
                                                          for j in range(120)) for d in range(12)))
    return data, calib


def eval_argv(store: Path, files, *spec: str) -> list[str]:
    data, calib = files
    return [sys.executable, "-m", "kickbench.cli", "eval", "--model", MODEL,
            "--device", "cpu", "--dtype", "float32", "--task", "factoid", "--data", str(data),
            "--batch-size", "1", "--store", str(store), "--calib-data", str(calib),
            "--nsamples", str(NSAMPLES), "--seqlen", str(SEQLEN),
            *(spec or ("--method", "sparsegpt", "--sparsity", "0.5"))]


def run_to_end(argv: list[str], log: Path) -> str:
    with open(log, "w") as out:
        done = subprocess.run(argv, env=ENV, stdout=out, stderr=subprocess.STDOUT, timeout=240)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    return text


def query(store: Path, sql: str, args=()) -> list | None:
    """Rows from a read-only connection; None while the file or its tables do not exist yet."""
    if not store.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:  # no such table (schema being created), or busy
        return None


def runs(store: Path) -> dict[str, str]:
    """run key -> method ('dense', 'sparsegpt', ...)."""
    rows = query(store, "SELECT key, json_extract(spec, '$.method') FROM runs") or []
    return dict(rows)


def samples(store: Path) -> dict[tuple[str, int], tuple]:
    """(key, idx) -> (rowid, prompt, output, new_tokens, item_id)."""
    rows = query(store, "SELECT key, idx, rowid, prompt, output, new_tokens, item_id FROM samples")
    return {(r[0], r[1]): r[2:] for r in rows or []}


def metrics(store: Path) -> dict[tuple[str, int], str]:
    """(key, idx) -> the sample's metrics (JSON text, fluency stage included)."""
    return {(r[0], r[1]): r[2] for r in query(store, "SELECT key, idx, metrics FROM samples") or []}


def scores(store: Path) -> dict[tuple[str, int, str], tuple]:
    rows = query(store, "SELECT key, n, metric, value, ci_low, ci_high FROM scores")
    return {r[:3]: r[3:] for r in rows or []}


def kill_when(argv: list[str], log: Path, ready, what: str, timeout: float = 180) -> None:
    """Start `argv`, SIGKILL it as soon as ready() holds (polled every few ms)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        try:
            while not ready():
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n"
                                + log.read_text()[-3000:])
                if time.time() > deadline:
                    pytest.fail(f"no {what} within {timeout} s:\n" + log.read_text()[-3000:])
                time.sleep(0.003)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def prompts_generated(log: str) -> dict[str, int]:
    """Prompts each run generated, from the progress bars' totals ('factoid | <key8>: ... k/T')."""
    out = {}
    for key8, total in re.findall(r"factoid \| ([0-9a-f]{8}): [^\r\n]*?\| *\d+/(\d+) \[", log):
        out[key8] = int(total)
    return out


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory):
    """An uninterrupted run of the same command in its own store."""
    store = tmp_path_factory.mktemp("reference") / "results.sqlite"
    log = run_to_end(eval_argv(store, files), store.with_suffix(".log"))
    kinds = runs(store)
    assert sorted(kinds.values()) == ["dense", "sparsegpt"], kinds
    assert prompts_generated(log) == {k[:8]: N for k in kinds}
    return store


def content(rows: dict) -> dict:
    """Sample text without rowids (to compare two stores)."""
    return {k: v[1:] for k, v in rows.items()}


def check_resumed(store: Path, reference: Path, before: dict, log: str) -> None:
    after = samples(store)
    for k, row in before.items():  # every finished batch untouched: same rowid, same text
        assert after[k] == row, k
    assert content(after) == content(samples(reference))  # nothing missing, nothing different
    assert len(after) == 2 * N
    added = {}
    for key, _ in set(after) - set(before):
        added[key[:8]] = added.get(key[:8], 0) + 1
    assert prompts_generated(log) == added  # the rerun generated only what was missing
    assert metrics(store) == metrics(reference)
    assert scores(store) == scores(reference)
    assert runs(store) == runs(reference)


def test_kill_during_generation_then_rerun(files, reference, tmp_path):
    store = tmp_path / "results.sqlite"
    argv = eval_argv(store, files)

    def mid_generation():  # the dense run has some samples, not all
        kinds = runs(store)
        dense = [k for k, m in kinds.items() if m == "dense"]
        rows = query(store, "SELECT COUNT(*) FROM samples") if dense else None
        return bool(rows) and 1 <= rows[0][0] < N

    kill_when(argv, tmp_path / "killed.log", mid_generation, "the middle of dense generation")
    before = samples(store)
    assert 1 <= len(before) < N and len(runs(store)) == 1
    assert scores(store) == {}
    log = run_to_end(argv, tmp_path / "rerun.log")
    check_resumed(store, reference, before, log)
    dense = next(k for k, m in runs(store).items() if m == "dense")
    assert prompts_generated(log)[dense[:8]] == N - len(before)


def test_kill_during_compression_then_rerun(files, reference, tmp_path):
    store = tmp_path / "results.sqlite"
    argv = eval_argv(store, files)

    def compressing():  # dense run finished (fluency stage included), compressed run not written
        kinds = runs(store)
        if len(kinds) != 1:
            return False
        rows = query(store, "SELECT 1 FROM scores WHERE key=? AND metric='answer_ppl'",
                     (next(iter(kinds)),))
        return bool(rows)

    kill_when(argv, tmp_path / "killed.log", compressing, "the dense run's end")
    kinds = runs(store)
    assert list(kinds.values()) == ["dense"], ("sparsegpt finished compressing before the kill; "
                                              "raise NSAMPLES", kinds)
    before = samples(store)
    assert len(before) == N
    dense_scores = scores(store)
    log = run_to_end(argv, tmp_path / "rerun.log")
    check_resumed(store, reference, before, log)
    assert set(prompts_generated(log).values()) == {N}  # the compressed run only
    assert {k: v for k, v in scores(store).items() if k in dense_scores} == dense_scores


def test_two_processes_sweep_into_one_store(files, reference, tmp_path):
    store = tmp_path / "results.sqlite"
    procs = []
    for i, level in enumerate(("0.5", "0.3")):  # both with the dense baseline
        log = open(tmp_path / f"writer{i}.log", "w")
        argv = eval_argv(store, files, "--method", "magnitude", "--sparsity", level)
        procs.append((subprocess.Popen(argv, env=ENV, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        proc.wait(240)
        log.close()
    logs = [(tmp_path / f"writer{i}.log").read_text() for i in range(2)]
    for (proc, _), text in zip(procs, logs):
        assert proc.returncode == 0, text[-3000:]
        assert "locked" not in text, text[-3000:]
    kinds = runs(store)
    assert sorted(kinds.values()) == ["dense", "magnitude", "magnitude"]
    rows, got = samples(store), scores(store)
    for key in kinds:
        assert sorted(i for k, i in rows if k == key) == list(range(N)), key
        assert {m for k, n, m in got if k == key and n == N} >= {"accuracy", "answer_ppl"}, key
    dense = next(k for k, m in kinds.items() if m == "dense")  # the same run as the reference's
    ref = scores(reference)
    assert {k: v for k, v in got.items() if k[0] == dense} == \
        {k: v for k, v in ref.items() if k[0] == dense}
    assert {k: v for k, v in content(rows).items() if k[0] == dense} == \
        {k: v for k, v in content(samples(reference)).items() if k[0] == dense}

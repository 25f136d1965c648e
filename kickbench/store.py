"""SQLite (WAL) results store: runs, per-sample records and scores, keyed by content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, model TEXT, spec TEXT, task TEXT, meta TEXT, created REAL);
CREATE TABLE IF NOT EXISTS samples (
    key TEXT, idx INTEGER, item_id TEXT, prompt TEXT, output TEXT, item TEXT,
    metrics TEXT, new_tokens INTEGER, provenance_id INTEGER, PRIMARY KEY (key, idx));
CREATE TABLE IF NOT EXISTS scores (
    key TEXT, n INTEGER, metric TEXT, value REAL, ci_low REAL, ci_high REAL, created REAL,
    PRIMARY KEY (key, n, metric));
CREATE TABLE IF NOT EXISTS judgments (
    hash TEXT PRIMARY KEY, judge TEXT, reply TEXT, created REAL);
CREATE TABLE IF NOT EXISTS provenance (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, meta TEXT, created REAL);
CREATE INDEX IF NOT EXISTS provenance_by_key ON provenance (key);
"""
# Stores made before provenance existed: their samples gain the column, NULL (origin unknown).
MIGRATIONS = (("samples", "provenance_id", "INTEGER"),)
SAMPLE_COLUMNS = "key, idx, item_id, prompt, output, item, metrics, new_tokens, provenance_id"
# Runs whose meta carries no key_scheme were keyed before per-component versions (scheme 1:
# kickbench.__version__, which never moved, and the task VERSION): made by older code.
OLDEST_SCHEME = 1


def default_path() -> Path:
    import platformdirs

    return Path(os.environ.get("KICKBENCH_STORE")
                or Path(platformdirs.user_data_dir("kickbench")) / "results.sqlite")


def result_key(fields: dict) -> str:
    """Hash of everything that can change a number (canonical JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


class Store:
    """One SQLite file; every write is one transaction, so an interruption loses only the
    batch in flight."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the workbench writes from its run thread; SQLite's serialized mode makes that safe
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=sqlite3.threadsafety < 3)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._migrate()
        self._provenance: dict[str, int] = {}  # key -> the provenance row this Store writes under

    def _migrate(self) -> None:
        for table, column, kind in MIGRATIONS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column in have:
                continue
            try:
                with self.db:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError:  # another process added it first
                if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                    raise

    def close(self) -> None:
        self.db.close()

    def put_run(self, key: str, model: str, spec: dict, task: str, meta: dict) -> int:
        """Record a run, and append `meta` to its provenance (never overwritten): the samples
        this Store adds to the run from now on point at that row. The run's own meta is the
        latest one (what labels and sizes read). Returns the provenance id."""
        now = time.time()
        with self.db:
            self.db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET meta=excluded.meta",
                (key, model, json.dumps(spec), task, json.dumps(meta), now))
            pid = self.db.execute("INSERT INTO provenance (key, meta, created) VALUES (?,?,?)",
                                  (key, json.dumps(meta), now)).lastrowid
        self._provenance[key] = pid
        return pid

    def provenance(self, key: str) -> list[dict]:
        """Every meta the run was (re)started under, oldest first: {id, meta, created}."""
        rows = self.db.execute("SELECT id, meta, created FROM provenance WHERE key=? ORDER BY id",
                               (key,)).fetchall()
        return [{"id": i, "meta": json.loads(m), "created": c} for i, m, c in rows]

    def sample_provenance(self, key: str, n: int | None = None) -> dict[int, int | None]:
        """idx -> the provenance id each of the first n samples was made under (None: stored
        before provenance was recorded)."""
        return dict(self.db.execute(
            "SELECT idx, provenance_id FROM samples WHERE key=? AND idx < ? ORDER BY idx",
            (key, n if n is not None else 2**62)).fetchall())

    def _current_provenance(self, key: str) -> int | None:
        if key in self._provenance:
            return self._provenance[key]
        row = self.db.execute("SELECT max(id) FROM provenance WHERE key=?", (key,)).fetchone()
        return row[0]

    def run(self, key: str) -> dict | None:
        row = self.db.execute("SELECT model, spec, task, meta FROM runs WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return {"model": row[0], "spec": json.loads(row[1]), "task": row[2], "meta": json.loads(row[3])}

    def done_indices(self, key: str) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT idx FROM samples WHERE key=?", (key,))}

    def add_samples(self, key: str, records: list[dict], provenance_id: int | None = None) -> None:
        """Store samples under the run's provenance: the given id, else the one this Store's
        last put_run(key) appended, else the run's latest."""
        pid = provenance_id if provenance_id is not None else self._current_provenance(key)
        with self.db:
            self.db.executemany(
                f"INSERT OR REPLACE INTO samples ({SAMPLE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, r["idx"], r["item"]["id"], r["prompt"], r["output"], json.dumps(r["item"]),
                  json.dumps(r["metrics"]), r["new_tokens"], pid) for r in records])

    def samples(self, key: str, n: int | None = None) -> pd.DataFrame:
        """Per-sample records of a run (the first n items), one column per metric."""
        rows = self.db.execute(
            "SELECT idx, item_id, prompt, output, item, metrics, new_tokens FROM samples "
            "WHERE key=? AND idx < ? ORDER BY idx", (key, n if n is not None else 2**62)).fetchall()
        records = [{"idx": r[0], "item_id": r[1], "prompt": r[2], "output": r[3],
                    "item": json.loads(r[4]), **json.loads(r[5]), "new_tokens": r[6]} for r in rows]
        return pd.DataFrame.from_records(records)

    def merge_metrics(self, key: str, updates: dict[int, dict]) -> None:
        """Add metrics to stored samples (e.g. a fluency stage run after generation)."""
        with self.db:
            for idx, extra in updates.items():
                row = self.db.execute("SELECT metrics FROM samples WHERE key=? AND idx=?",
                                      (key, idx)).fetchone()
                self.db.execute("UPDATE samples SET metrics=? WHERE key=? AND idx=?",
                                (json.dumps({**json.loads(row[0]), **extra}), key, idx))

    def judgments(self, hashes: list[str]) -> dict[str, str]:
        """Cached judge replies by prompt hash (see judge.prompt_hash)."""
        out = {}
        for start in range(0, len(hashes), 500):
            part = hashes[start:start + 500]
            out.update(self.db.execute(
                f"SELECT hash, reply FROM judgments WHERE hash IN ({','.join('?' * len(part))})",
                part).fetchall())
        return out

    def put_judgments(self, judge_label: str, replies: dict[str, str]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO judgments VALUES (?,?,?,?)",
                                [(h, judge_label, r, time.time()) for h, r in replies.items()])

    def put_scores(self, key: str, n: int, scores: dict[str, tuple[float, float, float]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?,?)",
                                [(key, n, m, *v, time.time()) for m, v in scores.items()])

    def scores(self, key: str, n: int) -> dict[str, tuple[float, float, float]] | None:
        rows = self.db.execute("SELECT metric, value, ci_low, ci_high FROM scores "
                               "WHERE key=? AND n=?", (key, n)).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows} or None

    def rows(self, key_scheme: int | None = None) -> list[dict]:
        """Every stored score with its run: key, model, spec and meta (decoded JSON), task, n,
        metric, value, ci_low, ci_high, key_scheme (the run's; OLDEST_SCHEME when its meta has
        none); oldest first. key_scheme: only the runs keyed under that scheme (pass
        versions.KEY_SCHEME for results the current code would look up, never older ones).
        Labels and frames: results.py."""
        rows = self.db.execute(
            "SELECT r.key, r.model, r.spec, r.task, r.meta, s.n, s.metric, s.value, s.ci_low, "
            "s.ci_high FROM scores s JOIN runs r ON r.key = s.key ORDER BY s.created").fetchall()
        out = []
        for key, model, spec, task, meta, n, metric, value, lo, hi in rows:
            meta = json.loads(meta)
            scheme = meta.get("key_scheme", OLDEST_SCHEME)
            if key_scheme is None or scheme == key_scheme:
                out.append({"key": key, "model": model, "spec": json.loads(spec), "task": task,
                            "meta": meta, "n": n, "metric": metric, "value": value,
                            "ci_low": lo, "ci_high": hi, "key_scheme": scheme})
        return out

    def key_schemes(self) -> dict[int, int]:
        """Number of runs per key scheme: runs of an older scheme were made by older code (kept,
        never looked up by the current one)."""
        counts: dict[int, int] = {}
        for (meta,) in self.db.execute("SELECT meta FROM runs"):
            scheme = json.loads(meta).get("key_scheme", OLDEST_SCHEME)
            counts[scheme] = counts.get(scheme, 0) + 1
        return counts

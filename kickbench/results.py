"""Results above the store: the tidy frame with labels, and the queries reports make of it
(what changed between two runs, per-group breakdowns, paired comparisons with the dense run).
The store only persists."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from . import divergence, tasks, versions
from .compress.spec import CompressionSpec
from .store import Store

COLUMNS = ["key", "model", "task", "task_label", "method", "family", "setting", "label", "sparsity",
           "pattern", "bits", "group_size", "layerwise", "size_fraction", "bits_per_weight",
           "nonzero", "template", "data", "judge", "n", "metric", "value", "ci_low", "ci_high"]


def frame(store: Store, current_only: bool = True) -> pd.DataFrame:
    """Tidy results: one row per (run, item count, metric) with the spec spread out. Rows made
    under an older key scheme (older code) are left out unless current_only=False."""
    records = []
    for r in store.rows(key_scheme=versions.KEY_SCHEME if current_only else None):
        spec, meta = r["spec"], r["meta"]
        parsed = CompressionSpec.from_key(spec)
        size = meta.get("compression", {}).get("size", {})
        records.append({**r, **spec, "task_label": tasks.label(r["task"], meta.get("template")),
                        "family": parsed.family, "setting": parsed.setting,
                        "label": parsed.label, "layerwise": parsed.layerwise,
                        "size_fraction": size.get("size_fraction"),
                        "bits_per_weight": size.get("bits_per_weight"),
                        "nonzero": meta.get("weights", {}).get("nonzero"),
                        "template": meta.get("template"), "data": meta.get("data_source"),
                        "judge": meta.get("judge_label")})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def changed_answers(store: Store, base_key: str, key: str, n: int,
                    metric: str = "accuracy") -> pd.DataFrame:
    """Items the base (dense) run got right and `key` got wrong, with both answers and, once
    measured, the dense model's perplexity of each answer (a fluency proxy)."""
    base, comp = store.samples(base_key, n), store.samples(key, n)
    if base.empty or comp.empty:
        return pd.DataFrame(columns=["question", "gold", "dense answer", "compressed answer"])
    both = base.merge(comp, on="idx", suffixes=("_dense", "_comp"))
    lost = both[(both[f"{metric}_dense"] == 1) & (both[f"{metric}_comp"] == 0)]
    items = lost["item_dense"]
    out = pd.DataFrame({"question": items.map(lambda it: it.get("question", it["id"])),
                        "gold": items.map(lambda it: " | ".join(it.get("answers", [])[:3])),
                        "dense answer": lost["output_dense"],
                        "compressed answer": lost["output_comp"]})
    for side, name in (("dense", "dense answer ppl"), ("comp", "compressed answer ppl")):
        if f"answer_nll_{side}" in lost:  # the fluency stage has run (see posthoc.fluency)
            out[name] = np.exp(lost[f"answer_nll_{side}"] / lost[f"answer_tokens_{side}"])
    return out.reset_index(drop=True)


def breakdown(store: Store, results: pd.DataFrame, task_label: str, field: str, metrics) -> pd.DataFrame:
    """Per-group rows of a task (e.g. MMLU by `category`), in the results frame's shape, so
    plots can draw them: task_label becomes "<task> · <group>", values are bootstrap means
    of the per-sample metrics of that group, NaN (not measured) left out before resampling as
    the aggregate does (n counts the measured samples; a group with none is left out); a
    dialogue task resamples whole conversations. `field` and `group` say which items a row
    holds (paired_frame pairs them with the dense run's same items), run_n the run's item count."""
    from . import stats

    rows = []
    for _, r in results[(results.task_label == task_label) & results.metric.isin(metrics)].iterrows():
        samples = store.samples(r.key, int(r.n))
        if samples.empty or r.metric not in samples.columns:
            continue
        groups = samples.item.map(lambda it: it.get(field, "?"))
        units = sample_units(r.task, samples)
        for group, values in samples[r.metric].groupby(groups):
            values = values.astype(float).dropna()
            if values.empty:
                continue
            mean, lo, hi = stats.bootstrap_ci(values.to_numpy(), groups=None if units is None
                                              else units[values.index].to_numpy())
            rows.append({**r.to_dict(), "task_label": f"{task_label} · {group}", "group": group,
                         "field": field, "run_n": int(r.n), "n": len(values), "value": mean,
                         "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def sample_units(task: str, samples: pd.DataFrame) -> pd.Series | None:
    """The resampling unit of each sample: a dialogue's conversation id (its turns resample
    together, issue 17); None: every sample is its own unit."""
    field = _unit_field(task)
    return None if field is None else samples.item.map(lambda it: str(it.get(field, it.get("id"))))


DIALOGUE_UNIT = "dialogue"  # the item field holding a turn's conversation (tasks/instruct.expand)


def _unit_field(task: str) -> str | None:
    """The item field whose value is a resampling unit of this task (None: each item)."""
    return DIALOGUE_UNIT if getattr(tasks.TASKS.get(task), "KIND", None) == "dialogue" else None


PAIRED_COLUMNS = ["key", "dense_key", "model", "task", "task_label", "group", "label", "method",
                  "family", "setting", "sparsity", "size_fraction", "metric", "n", "pairs",
                  "units", "value", "dense_value", "diff", "ci_low", "ci_high", "scale", "test",
                  "p", "p_holm", "right_to_wrong", "wrong_to_right", "worse", "significant_drop"]

# Further per-pair measures: functions (dense samples, compressed samples, results row) -> dict
# of extra columns, or {} where they do not apply. divergence.paired_kl: the point's mean KL from
# dense on the paired items (kl, kl_low, kl_high, kl_items).
PAIR_MEASURES: tuple = (divergence.paired_kl,)


def paired_frame(store: Store, results: pd.DataFrame, panels=None,
                 n_boot: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """Every compressed point against the dense run of the same model, task, data, template,
    decoding, seed and judge, on the same items (samples aligned on `idx`): one row per
    (point, task, metric) with the dense run's key, n (the point's item count), pairs (items
    both measured), units (resampling units: items, or conversations for dialogues), value and
    dense_value (the stored aggregates), diff = compressed - dense on the pairs (perplexity-like
    metrics: NLL per token, scale "nll_per_token"), its 95% paired bootstrap interval ci_low..
    ci_high, p (test "mcnemar" for 0/1 metrics, else "bootstrap"; paired.py), p_holm (Holm's
    correction across every row of this frame: pass `panels`, [(task_label, metric)], to make
    the family the points a report shows), right_to_wrong / wrong_to_right (0/1 metrics),
    worse (diff in the metric's bad direction) and significant_drop (worse and p_holm < 0.05).
    Rows of a breakdown (a `group` and `field` column) pair the group's items only. Counts
    ("sum" metrics) and points without a dense run are left out."""
    from . import paired, stats

    n_boot = stats.BOOTSTRAP_SAMPLES if n_boot is None else n_boot
    seed = stats.BOOTSTRAP_SEED if seed is None else seed
    rows = results
    if panels is not None:
        wanted = set(map(tuple, panels))
        rows = rows[[(t, m) in wanted for t, m in zip(rows.task_label, rows.metric)]]
    if rows.empty:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    baseline, samples = {}, {}

    def signature(r) -> str:
        """What a run shares with its dense baseline: every key field but the compression."""
        if r.key not in baseline:
            run = store.run(r.key) or {"meta": {}}
            fields = {k: v for k, v in run["meta"].get("key_fields", {}).items()
                      if k not in ("spec", "calibration")}
            if isinstance(fields.get("versions"), dict):  # the compressor's own version too
                fields["versions"] = {k: v for k, v in fields["versions"].items() if k != "compressor"}
            baseline[r.key] = json.dumps([r.model, r.task, r.task_label, fields,
                                          run["meta"].get("judge"), run["meta"].get("judge_fields")],
                                         sort_keys=True, default=str)
        return baseline[r.key]

    def items(key: str, n: int, r) -> pd.DataFrame:
        if (key, n) not in samples:
            samples[key, n] = store.samples(key, n)
        s = samples[key, n]
        field, group = getattr(r, "field", None), getattr(r, "group", None)
        if isinstance(field, str) and not s.empty:
            s = s[s.item.map(lambda it: it.get(field, "?")) == group]
        return s

    def size(r) -> int:
        """The run's item count (a breakdown row's n counts its group; run_n the run's)."""
        return int(getattr(r, "run_n", r.n))

    dense = {}
    for r in rows[rows.family == "dense"].itertuples(index=False):
        dense.setdefault((signature(r), r.metric), []).append(r)
    out = []
    for r in rows[rows.family != "dense"].itertuples(index=False):
        candidates = dense.get((signature(r), r.metric))
        if not candidates:
            continue
        d = next((c for c in reversed(candidates) if size(c) == size(r)), max(candidates, key=size))
        n = min(size(d), size(r))
        facts = tasks.metric(r.metric, r.task)
        group_by = _unit_field(r.task)
        dense_s, comp_s = items(d.key, n, r), items(r.key, n, r)
        if dense_s.empty or comp_s.empty:
            continue
        stat = paired.compare(dense_s, comp_s, facts, group_by, n_boot=n_boot, seed=seed)
        if stat is None:
            continue
        worse = stat["diff"] < 0 if facts.higher_is_better else stat["diff"] > 0
        row = {"key": r.key, "dense_key": d.key, "model": r.model, "task": r.task,
               "task_label": r.task_label, "group": getattr(r, "group", None), "label": r.label,
               "method": r.method, "family": r.family, "setting": r.setting,
               "sparsity": r.sparsity, "size_fraction": r.size_fraction, "metric": r.metric,
               "n": r.n, "value": r.value, "dense_value": d.value, "worse": bool(worse),
               **{k: stat[k] for k in ("pairs", "units", "diff", "ci_low", "ci_high", "scale",
                                       "test", "p", "right_to_wrong", "wrong_to_right")}}
        for measure in PAIR_MEASURES:
            row.update(measure(dense_s, comp_s, r))
        out.append(row)
    frame = pd.DataFrame(out, columns=PAIRED_COLUMNS + [c for c in (out[0] if out else {})
                                                          if c not in PAIRED_COLUMNS])
    frame["p_holm"] = paired.holm(frame.p.astype(float)) if len(frame) else []
    frame["significant_drop"] = (frame.p_holm < paired.ALPHA) & frame.worse.astype(bool)
    return frame


def with_paired(results: pd.DataFrame, paired_rows: pd.DataFrame) -> pd.DataFrame:
    """The results frame plus each point's paired comparison with dense (paired_frame):
    diff, diff_low, diff_high, scale, p, p_holm, significant_drop (False where there is none:
    dense rows, counts), right_to_wrong, wrong_to_right and the PAIR_MEASURES' columns (kl,
    kl_low, kl_high, ...) where present. Charts mark the significant drops (plots.py)."""
    cols = ["diff", "ci_low", "ci_high", "scale", "p", "p_holm", "significant_drop",
            "right_to_wrong", "wrong_to_right"]
    cols += [c for c in paired_rows.columns if c not in PAIRED_COLUMNS]
    extra = paired_rows[["key", "n", "task_label", "metric", *cols]].rename(
        columns={"ci_low": "diff_low", "ci_high": "diff_high"})
    extra = extra.drop_duplicates(["key", "n", "task_label", "metric"], keep="last")
    out = results.drop(columns=[c for c in extra.columns if c in results.columns
                                and c not in ("key", "n", "task_label", "metric")])
    out = out.merge(extra, on=["key", "n", "task_label", "metric"], how="left")
    out["significant_drop"] = out.significant_drop.eq(True)
    return out

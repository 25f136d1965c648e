"""Results above the store: the tidy frame with labels, and the queries reports make of it
(what changed between two runs, per-group breakdowns). The store only persists."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import tasks
from .compress.spec import CompressionSpec
from .store import Store

COLUMNS = ["key", "model", "task", "task_label", "method", "family", "setting", "label", "sparsity",
           "pattern", "bits", "group_size", "layerwise", "size_fraction", "bits_per_weight",
           "nonzero", "template", "data", "judge", "n", "metric", "value", "ci_low", "ci_high"]


def frame(store: Store) -> pd.DataFrame:
    """Tidy results: one row per (run, item count, metric) with the spec spread out."""
    records = []
    for r in store.rows():
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
    of the per-sample metrics of that group."""
    from . import stats

    rows = []
    for _, r in results[(results.task_label == task_label) & results.metric.isin(metrics)].iterrows():
        samples = store.samples(r.key, int(r.n))
        groups = samples.item.map(lambda it: it.get(field, "?"))
        for group, values in samples[r.metric].groupby(groups):
            mean, lo, hi = stats.bootstrap_ci(values.to_numpy())
            rows.append({**r.to_dict(), "task_label": f"{task_label} · {group}", "group": group,
                         "n": len(values), "value": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)

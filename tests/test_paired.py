"""Paired comparisons with the dense model (issue 17): paired and cluster bootstraps against
direct computation, exact McNemar and Holm by hand, flips, breakdowns with NaN, and the paired
frame of a tiny sweep."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from kickbench import paired, plots, results, stats, sweep, versions
from kickbench.compress.spec import CompressionSpec
from kickbench.tasks import TaskSpec
from kickbench.tasks.metrics import Metric


def correlated(n=40, seed=1):
    """Two runs on the same items: a shared per-item difficulty, the second a little worse."""
    rng = np.random.default_rng(seed)
    item = rng.normal(0.6, 0.2, n)
    return item + rng.normal(0, 0.02, n), item - 0.05 + rng.normal(0, 0.02, n)


def test_paired_bootstrap_equals_a_direct_numpy_computation_with_the_same_seed():
    dense, comp = correlated()
    r = paired.paired_bootstrap(comp, dense)
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)  # the seed bootstrap_ci uses
    pick = rng.integers(0, dense.size, size=(stats.BOOTSTRAP_SAMPLES, dense.size))
    reps = comp[pick].mean(axis=1) - dense[pick].mean(axis=1)  # same items for both
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert r.diff == pytest.approx(comp.mean() - dense.mean(), abs=1e-12)
    assert (r.low, r.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert r.units == dense.size
    # the p-value: twice the share of replicates on the other side of 0 (floored at 2^(1-n))
    expected = max(min(1.0, 2 * np.mean(reps >= 0)), 2.0 ** (1 - dense.size))
    assert r.p == pytest.approx(expected) and r.p < 0.01
    assert paired.paired_bootstrap(comp, dense) == r  # fixed seed: reproducible


def test_paired_interval_is_narrower_than_the_unpaired_one_for_correlated_data():
    dense, comp = correlated()
    r = paired.paired_bootstrap(comp, dense)
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)  # unpaired: each run resampled on its own
    pa = rng.integers(0, dense.size, size=(stats.BOOTSTRAP_SAMPLES, dense.size))
    pb = rng.integers(0, dense.size, size=(stats.BOOTSTRAP_SAMPLES, dense.size))
    lo, hi = np.percentile(comp[pa].mean(axis=1) - dense[pb].mean(axis=1), [2.5, 97.5])
    assert r.high - r.low < 0.25 * (hi - lo)
    assert r.high < 0 < hi  # paired: a clear drop; unpaired: not even distinguishable from 0


def test_paired_bootstrap_p_is_not_below_what_few_units_can_show():
    # two windows, both worse: every replicate is worse, yet two units cannot show p < 0.5
    r = paired.paired_bootstrap([2.0, 3.0], [1.0, 2.0])
    assert r.diff == 1.0 and r.p == 0.5
    assert paired.paired_bootstrap([1.0, 2.0], [1.0, 2.0]).p == 1.0  # no difference


def test_weighted_paired_bootstrap_is_the_token_weighted_nll_difference():
    nll_d, nll_c, tok = np.array([10.0, 30.0, 8.0]), np.array([12.0, 33.0, 9.0]), np.array([5.0, 10.0, 4.0])
    r = paired.paired_bootstrap(nll_c / tok, nll_d / tok, tok, tok)
    assert r.diff == pytest.approx(nll_c.sum() / tok.sum() - nll_d.sum() / tok.sum())


def test_exact_mcnemar_by_hand():
    # b=1, c=6: n=7 discordant pairs, P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = (1 + 7) / 128,
    # two-sided p = 2 * 8 / 128 = 0.125
    assert paired.mcnemar_exact(1, 6) == 0.125 == paired.mcnemar_exact(6, 1)
    # b=0, c=5: 2 * 1/32 = 0.0625
    assert paired.mcnemar_exact(0, 5) == 0.0625
    # b=2, c=10: P(X <= 2) = (1 + 12 + 66) / 4096 = 79/4096, p = 158/4096
    assert paired.mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    # b=3, c=3: 2 * (1 + 6 + 15 + 20) / 64 > 1, capped at 1; no discordant pair: 1
    assert paired.mcnemar_exact(3, 3) == 1.0 and paired.mcnemar_exact(0, 0) == 1.0
    assert 0 <= paired.mcnemar_exact(0, 2000) < 1e-300  # 2 / 2^2000: no overflow
    assert 0 < paired.mcnemar_exact(900, 1100) < 1e-4  # large counts: exact integer arithmetic


def test_holm_by_hand():
    # sorted: 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04
    # running max: 0.02, 0.03, 0.06, 0.06; back in input order:
    p = [0.01, 0.04, 0.03, 0.005]
    assert paired.holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN (no test) is not in the family (m = 2 here) and stays NaN; nothing exceeds 1
    out = paired.holm([0.2, float("nan"), 0.7])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.4) and out[2] == pytest.approx(0.7)
    assert paired.holm([0.6, 0.9]).tolist() == [1.0, 1.0]
    assert paired.holm([]).size == 0


def test_flips_counted_by_hand():
    dense = [1, 1, 0, 0, 1, 0, 1]
    comp = [0, 1, 1, 0, 0, 0, 1]
    # right -> wrong: items 0 and 4; wrong -> right: item 2
    assert paired.flips(dense, comp) == (2, 1)


def test_cluster_bootstrap_replicates_hold_only_whole_conversations():
    # two conversations: "a" with 3 turns, "b" with 4 (turns of one conversation are interleaved
    # with the other's, as a dialogue run stores them round by round)
    groups = ["a", "b", "a", "b", "a", "b", "b"]
    reps = stats.replicates(len(groups), groups, n_boot=200)
    members = {g: {i for i, x in enumerate(groups) if x == g} for g in "ab"}
    for rep in reps:
        counts = np.bincount(rep, minlength=len(groups))
        for g, idx in members.items():
            assert len({counts[i] for i in idx}) == 1  # every turn of a conversation, equally often
        assert sorted(counts[i] for i in (0, 1)) in ([0, 2], [1, 1])  # two conversations drawn
    # the bootstraps compute on exactly these replicates
    values = np.array([1.0, 0.0, 1.0, 0.5, 0.0, 0.5, 0.0])
    other = np.array([0.5, 0.5, 1.0, 0.0, 0.5, 1.0, 0.0])
    r = paired.paired_bootstrap(values, other, groups=groups, n_boot=200)
    direct = [values[i].mean() - other[i].mean() for i in reps]
    assert (r.low, r.high) == (pytest.approx(np.percentile(direct, 2.5)),
                               pytest.approx(np.percentile(direct, 97.5)))
    assert r.units == 2
    # only three replicate means are possible: a twice, b twice, or both
    mean, lo, hi = stats.bootstrap_ci(values, groups=groups)
    possible = [values[[0, 2, 4]].mean(), values[[1, 3, 5, 6]].mean(), values.mean()]
    assert min(abs(lo - v) for v in possible) < 1e-12 and min(abs(hi - v) for v in possible) < 1e-12
    # one group per item is the plain item bootstrap, number for number
    assert stats.bootstrap_ci(values, groups=list("pqrstuv")) == stats.bootstrap_ci(values)


def test_compare_pairs_dialogue_turns_by_conversation():
    def frame(scores):
        items = [{"id": f"d{d}/turn{t + 1}", "dialogue": f"d{d}", "turn": t} for d, t in
                 [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1)]]
        return pd.DataFrame({"idx": range(6), "item_id": [it["id"] for it in items], "item": items,
                             "rougeL": scores})

    dense, comp = frame([0.5, 0.4, 0.6, 0.5, np.nan, 0.3]), frame([0.4, 0.3, 0.6, 0.2, 0.1, 0.3])
    out = paired.compare(dense, comp, Metric("rougeL", "ROUGE-L"), group_by="dialogue")
    assert out["pairs"] == 5 and out["units"] == 3  # the NaN turn is left out; 3 conversations
    assert out["diff"] == pytest.approx(np.mean([-0.1, -0.1, 0, -0.3, 0]))
    assert out["test"] == "bootstrap" and out["right_to_wrong"] is None
    assert paired.compare(dense, comp, Metric("unparsed", "n", aggregate="sum")) is None


def put(store, key, task, spec, values, category=None, fields=None, n=None):
    """A stored run with per-sample values of `values` (dict metric -> list) and its scores."""
    n = n or len(next(iter(values.values())))
    fields = {"model": "fp", "task": task, "seed": 0, **(fields or {}), "spec": spec.key()}
    store.put_run(key, "m", spec.key(), task, {"key_fields": fields,
                                                "key_scheme": versions.KEY_SCHEME})
    store.add_samples(key, [
        {"idx": i, "item": {"id": f"q{i}", **({"category": category[i]} if category else {})},
         "prompt": "", "output": "", "new_tokens": 0,
         "metrics": {m: v[i] for m, v in values.items()}} for i in range(n)])
    store.put_scores(key, n, {m: stats.aggregate(v) for m, v in values.items()})


def test_breakdown_leaves_nan_out_before_resampling(store):
    nan = float("nan")
    put(store, "k", "mmlu", CompressionSpec("dense"), {"letter_accuracy": [1, nan, 0, 1, nan, nan]},
        category=["A", "A", "A", "A", "B", "B"])
    frame = results.frame(store)
    assert frame.value.iloc[0] == pytest.approx(2 / 3)  # the aggregate leaves NaN out
    parts = results.breakdown(store, frame, "mmlu", "category", ["letter_accuracy"])
    assert parts.group.tolist() == ["A"]  # B has nothing measured: no row, rather than NaN
    row = parts.iloc[0]
    assert row.value == pytest.approx(2 / 3) and row.n == 3 and row.ci_low <= row.value <= row.ci_high


def test_paired_frame_pairs_breakdown_groups_and_dialogue_conversations(store):
    dense, comp = CompressionSpec("dense"), CompressionSpec("magnitude", 0.5)
    cats = ["A", "A", "A", "B", "B", "B"]
    put(store, "d", "mmlu", dense, {"letter_accuracy": [1, 1, 1, 0, 1, 0]}, category=cats)
    put(store, "c", "mmlu", comp, {"letter_accuracy": [0, 1, 0, 0, 1, 1]}, category=cats)
    put(store, "other", "mmlu", comp, {"letter_accuracy": [0] * 6}, category=cats,
        fields={"seed": 1})  # another seed: no dense run of its own, left out
    frame = results.frame(store)
    pf = results.paired_frame(store, frame)
    assert pf.key.tolist() == ["c"] and pf.dense_key.tolist() == ["d"]
    row = pf.iloc[0]
    assert (row.right_to_wrong, row.wrong_to_right) == (2, 1) and row.test == "mcnemar"
    assert row.p == paired.mcnemar_exact(2, 1) and row.p_holm == row.p  # a family of one
    assert row["diff"] == pytest.approx(-1 / 6) and row.worse and not row.significant_drop
    parts = results.breakdown(store, frame[frame.key != "other"], "mmlu", "category", ["letter_accuracy"])
    pp = results.paired_frame(store, parts).set_index("group")
    assert pp.loc["A", "right_to_wrong"] == 2 and pp.loc["A", "pairs"] == 3
    assert pp.loc["B", "wrong_to_right"] == 1 and pp.loc["B", "pairs"] == 3
    assert pp.p_holm.tolist() == pytest.approx(paired.holm(pp.p).tolist())


def test_paired_frame_resamples_dialogues_by_conversation(store):
    for key, spec, scores in (("d", CompressionSpec("dense"), [0.5, 0.4, 0.6, 0.5]),
                              ("c", CompressionSpec("magnitude", 0.5), [0.4, 0.3, 0.6, 0.2])):
        items = [{"id": f"{c}/turn{t + 1}", "dialogue": c, "turn": t}
                 for c, t in (("x", 0), ("y", 0), ("x", 1), ("y", 1))]
        store.put_run(key, "m", spec.key(), "instruct",
                      {"key_fields": {"model": "fp", "task": "instruct", "spec": spec.key()},
                       "key_scheme": versions.KEY_SCHEME})
        store.add_samples(key, [{"idx": i, "item": it, "prompt": "", "output": "", "new_tokens": 0,
                                 "metrics": {"rougeL": s}} for i, (it, s) in enumerate(zip(items, scores))])
        store.put_scores(key, 4, {"rougeL": stats.aggregate(scores)})
    pf = results.paired_frame(store, results.frame(store))
    row = pf.iloc[0]
    assert row.units == 2 and row.pairs == 4 and row.test == "bootstrap"
    assert row.p >= 0.5  # two conversations cannot show more


SETTINGS = dict(device="cpu", dtype="float32", batch_size=4, progress=False)


@pytest.fixture
def small_data(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"id": f"q{i}", "question": f"What is {i} plus one?", "answers": [str(i + 1)]}
            for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskSpec("factoid", data=str(path))


def test_paired_frame_of_a_tiny_sweep(store, small_data):
    from kickbench.ui import results_table

    tasks = [small_data, TaskSpec("perplexity", window=32, limit=4)]
    specs = [CompressionSpec("dense"), CompressionSpec("magnitude", 0.5), CompressionSpec("magnitude", 0.8)]
    runs = sweep.plan(["tiny-llama"], specs, tasks)
    sweep.execute(runs, store, sweep.Settings(limit=6, **SETTINGS))
    frame = results.frame(store)
    pf = results.paired_frame(store, frame)
    dense_keys = dict(zip(frame[frame.method == "dense"].task, frame[frame.method == "dense"].key))
    assert set(pf.label) == {"magnitude 50%", "magnitude 80%"}
    assert set(pf.metric) == {"accuracy", "exact_match", "haystack_accuracy", "answer_ppl", "perplexity"}
    assert len(pf) == 2 * 5 and (pf.dense_key == pf.task.map(dense_keys)).all()
    assert pf.p_holm.tolist() == pytest.approx(paired.holm(pf.p).tolist())
    assert ((pf.ci_low <= pf["diff"] + 1e-12) & (pf["diff"] <= pf.ci_high + 1e-12)).all()
    for r in pf[pf.metric == "accuracy"].itertuples():
        d, c = store.samples(r.dense_key, 6), store.samples(r.key, 6)
        b = int(((d.accuracy == 1) & (c.accuracy == 0)).sum())
        w = int(((d.accuracy == 0) & (c.accuracy == 1)).sum())
        assert (r.right_to_wrong, r.wrong_to_right) == (b, w) and r.p == paired.mcnemar_exact(b, w)
        assert r.diff == pytest.approx(r.value - r.dense_value) and r.pairs == 6
    ppl = pf[pf.metric == "perplexity"]
    assert (ppl.scale == "nll_per_token").all() and ppl.right_to_wrong.isna().all()
    # NLL per token: the log of the perplexity ratio
    assert ppl["diff"].tolist() == pytest.approx(np.log(ppl.value / ppl.dense_value).tolist())
    assert (ppl.units == 4).all() and (ppl.p >= 2.0 ** -3).all()
    # panels restrict the family Holm corrects over
    one = results.paired_frame(store, frame, [("factoid", "accuracy")])
    assert set(one.metric) == {"accuracy"} and len(one) == 2

    marked = results.with_paired(frame, pf)
    assert len(marked) == len(frame) and not marked.significant_drop[marked.method == "dense"].any()
    # a significant drop gets a ring on the chart: one legend entry across panels
    forced = marked.assign(significant_drop=marked.method != "dense", p_holm=0.001)
    fig = plots.small_multiples(forced, [("factoid", "accuracy"), ("perplexity", "perplexity")])
    rings = [t for t in fig.data if t.name == plots.SIGNIFICANT]
    assert len(rings) == 2 and sum(bool(t.showlegend) for t in rings) == 1
    assert rings[0].marker.symbol == "circle-open" and len(rings[0].x) == 2
    assert not any(t.name == plots.SIGNIFICANT for t in plots.small_multiples(
        marked.assign(significant_drop=False), [("factoid", "accuracy")]).data)
    # the workbench's table: the difference and Holm p next to each compressed score
    table = results_table(frame[frame.metric == "accuracy"], store)
    cells = table.filter(like="factoid accuracy").iloc[:, 0].tolist()
    assert "Δ" not in cells[0] and all("Δ" in c and "p(Holm)=" in c for c in cells[1:])

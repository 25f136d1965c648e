"""OWL layer-wise sparsity: the pure maths on hand-made numbers, then pruning tiny-llama."""

import pytest
import torch

from kickbench import compress
from kickbench.compress import calibration as calib
from kickbench.compress import owl
from kickbench.compress.layers import block_linears, target_linears, weight_matrix
from kickbench.compress.spec import CompressionSpec


def test_layer_sparsities_hand_computed():
    # shift = (r - 1) / 3 * 0.2 = [0, 3/45, 9/45], mean 4/45; sparsity = 0.5 + 4/45 - shift
    s = owl.layer_sparsities([1.0, 2.0, 4.0], 0.5, 0.1)
    assert s.tolist() == pytest.approx([0.5 + 4 / 45, 0.5 + 1 / 45, 0.5 - 5 / 45], abs=1e-12)


@pytest.mark.parametrize("ratios", [[0.3, 2.5, 0.9, 7.0, 1.1, 0.2], [5.0, 0.0, 0.0, 0.0],
                                    [0.0, 1.0, 2.0, 3.0, 4.0]])
def test_layer_sparsities_mean_spread_and_order(ratios):
    target, lam = 0.5, 0.08
    s = owl.layer_sparsities(ratios, target, lam)
    assert s.mean().item() == pytest.approx(target, abs=1e-12)
    assert (s.max() - s.min()).item() == pytest.approx(2 * lam, abs=1e-12)  # as the reference
    assert ((s - target).abs() <= 2 * lam).all()
    order = sorted(range(len(ratios)), key=lambda i: ratios[i])
    assert all(s[a] >= s[b] for a, b in zip(order, order[1:]))  # more outliers, less pruned
    assert s[order[-1]] < s[order[0]]


def test_symmetric_ratios_stay_within_target_plus_minus_lambda():
    s = owl.layer_sparsities([0.0, 1.0, 2.0, 3.0, 4.0], 0.6, 0.1)
    assert s.tolist() == pytest.approx([0.7, 0.65, 0.6, 0.55, 0.5], abs=1e-12)


def test_equal_ratios_give_uniform_sparsity():
    assert owl.layer_sparsities([3.0, 3.0, 3.0], 0.4, 0.08).tolist() == [0.4, 0.4, 0.4]
    assert owl.layer_sparsities([0.0, 0.0], 0.4, 0.08).tolist() == [0.4, 0.4]


def test_sparsity_outside_0_1_is_refused_not_clipped():
    with pytest.raises(ValueError, match=r"sparsity 0.05 with owl_lambda 0.08 .*\[-0.03, 0.13\]"):
        owl.layer_sparsities([0.0, 1.0], 0.05, 0.08)
    with pytest.raises(ValueError, match="sparsity 0.95 with owl_lambda 0.08"):
        owl.layer_sparsities([0.0, 1.0], 0.95, 0.08)
    # passes the band check but one skewed block would be at 0.1 - 0.12 < 0
    with pytest.raises(ValueError, match=r"block 0 sparsity -0.0200"):
        owl.layer_sparsities([10.0, 0.0, 0.0, 0.0], 0.1, 0.08)
    assert owl.layer_sparsities([0.0, 1.0], 0.08, 0.08).min().item() == 0.0  # edge is allowed


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    scores = torch.ones(10, 10)
    scores[3, 4] = scores[7, 1] = 100.0  # mean 2.98: threshold 14.9 at m=5
    assert owl.outlier_ratio(scores, 5.0) == pytest.approx(2.0)
    assert owl.outlier_ratio(scores, 40.0) == 0.0
    # strictly greater, as the reference: 6 is not above 3 x mean 2
    assert owl.outlier_ratio(torch.tensor([1.0, 1.0, 1.0, 1.0, 6.0]), 3.0) == 0.0


def test_outlier_ratio_pools_a_blocks_linears():
    g = torch.Generator().manual_seed(0)
    parts = [torch.rand(8, 16, generator=g) ** 4, torch.rand(4, 32, generator=g) ** 8]
    pooled = torch.cat([p.flatten() for p in parts])
    assert owl.outlier_ratio(parts, 3.0) == pytest.approx(owl.outlier_ratio(pooled, 3.0))
    assert owl.outlier_ratio(parts, 3.0) > 0


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_owl_end_to_end_on_tiny_llama(tiny, c4_spec, method):
    lm = tiny("tiny-llama")
    spec = CompressionSpec(method, 0.5, calibration=c4_spec, layerwise="owl")
    assert compress.needs_calibration(spec)  # magnitude too: OWL reads activations
    assert spec.label == f"{method} 50% owl"
    assert spec.key()["layerwise"] == "owl"
    assert spec.key()["options"] == {"owl_lambda": 0.08, "owl_m": 5.0}
    cal = calib.prepare(lm.tokenizer, c4_spec)
    expected = owl.allocate(lm.model, spec, cal)  # on the dense model, as apply does
    before = {n: weight_matrix(m).clone() for n, m in target_linears(lm.model)}
    with compress.applied(lm.model, spec, cal) as report:
        per_block = []
        for _, linears in block_linears(lm.model):
            targets = {report["layers"][n]["target_sparsity"] for n in linears}
            assert len(targets) == 1  # one sparsity per block
            per_block.append(targets.pop())
            for n, m in linears.items():
                w = weight_matrix(m)
                achieved = (w == 0).float().mean().item()
                assert achieved == pytest.approx(per_block[-1], abs=1 / w.shape[1]), n
        assert per_block[0] != per_block[1]
        assert sum(per_block) / len(per_block) == pytest.approx(0.5, abs=1e-12)
        assert max(per_block) - min(per_block) == pytest.approx(0.16, abs=1e-12)
        assert {n: s["target_sparsity"] for n, s in report["layers"].items()} == expected
        assert report["sparsity"] == pytest.approx(0.5, abs=0.005)
        assert report["spec"] == f"{method} 50% owl"
    for n, m in target_linears(lm.model):
        assert torch.equal(weight_matrix(m), before[n])


def test_owl_with_lambda_zero_is_uniform_pruning(tiny, c4_spec):
    lm = tiny("tiny-llama")
    cal = calib.prepare(lm.tokenizer, c4_spec)
    plain = CompressionSpec("wanda", 0.5, calibration=c4_spec)
    flat = CompressionSpec("wanda", 0.5, calibration=c4_spec, layerwise="owl",
                           options={"owl_lambda": 0.0})
    with compress.applied(lm.model, plain, cal):
        uniform = {n: weight_matrix(m).clone() for n, m in target_linears(lm.model)}
    with compress.applied(lm.model, flat, cal) as report:
        assert {s["target_sparsity"] for s in report["layers"].values()} == {0.5}
        for n, m in target_linears(lm.model):
            assert torch.equal(weight_matrix(m), uniform[n]), n


def test_owl_refuses_before_pruning_when_the_band_leaves_0_1(tiny, c4_spec):
    lm = tiny("tiny-llama")
    spec = CompressionSpec("wanda", 0.05, calibration=c4_spec, layerwise="owl")
    before = {n: weight_matrix(m).clone() for n, m in target_linears(lm.model)}
    with pytest.raises(ValueError, match="owl_lambda must be <= sparsity"):
        compress.apply(lm.model, spec, calib.prepare(lm.tokenizer, c4_spec))
    for n, m in target_linears(lm.model):
        assert torch.equal(weight_matrix(m), before[n])


def test_owl_specs_that_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="pattern 2:4 fixes every layer's sparsity"):
        CompressionSpec("wanda", pattern="2:4", layerwise="owl")
    with pytest.raises(ValueError, match="takes no option 'owl_m'"):
        CompressionSpec("wanda", 0.5, options={"owl_m": 3.0})
    with pytest.raises(ValueError, match=r"owl_m=0.0: must be a finite number > 0"):
        CompressionSpec("wanda", 0.5, layerwise="owl", options={"owl_m": 0.0})
    with pytest.raises(ValueError, match=r"owl_lambda=0.5: must be in \[0, 0.5\)"):
        CompressionSpec("magnitude", 0.5, layerwise="owl", options={"owl_lambda": 0.5})
    with pytest.raises(ValueError, match="unknown layer-wise allocation 'owls'"):
        CompressionSpec("wanda", 0.5, layerwise="owls")

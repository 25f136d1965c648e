"""RTN and GPTQ: pure maths on small tensors, size arithmetic, then the model plumbing."""

import math

import pytest
import torch

from kickbench import compress, models
from kickbench.compress.gptq import gptq_quantize, quantize_layers
from kickbench.compress.hessian import Hessian
from kickbench.compress.layers import target_linears, weight_matrix
from kickbench.compress.quant import grid_for, group_bounds, packed_bits, quantize, rtn
from kickbench.compress.size import layer_bits, model_size
from kickbench.compress.spec import CompressionSpec

from helpers import correlated_inputs, rel_error


def weights(rows=16, cols=64, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 16, 24])
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_error_is_at_most_half_a_step_and_uses_at_most_2_to_the_bits_levels(
        bits, group_size, symmetric):
    w = weights()
    q = rtn(w, bits, group_size, symmetric)
    for a, b in group_bounds(w.shape[1], group_size):
        grid = grid_for(w[:, a:b], bits, symmetric)
        assert ((w[:, a:b] - q[:, a:b]).abs() <= grid.scale / 2 + 1e-6).all()
        for row in q[:, a:b]:
            assert len(torch.unique(row)) <= 2**bits


def test_values_on_the_grid_round_trip_exactly():
    scale, zero = torch.tensor([[0.5], [0.25]]), torch.tensor([[3.0], [0.0]])
    codes = torch.tensor([[0, 1, 2, 15, 7], [0, 15, 3, 4, 9]], dtype=torch.float32)
    w = scale * (codes - zero)
    grid = grid_for(w, 4, symmetric=False)
    assert torch.allclose(quantize(w, grid), w, atol=1e-6)


def test_a_zero_row_stays_zero():
    w = torch.zeros(2, 8)
    assert torch.equal(rtn(w, 3, None, False), w) and torch.equal(rtn(w, 3, 4, True), w)


def test_packed_bits_arithmetic():
    # 3 rows x 10 inputs, groups of 4 -> groups of 4, 4, 2 -> 9 groups
    assert packed_bits(3, 10, 4, 4, symmetric=False) == 3 * 10 * 4 + 9 * (16 + 4)
    assert packed_bits(3, 10, 4, 4, symmetric=True) == 3 * 10 * 4 + 9 * 16
    assert packed_bits(3, 10, 3, None, symmetric=False) == 3 * 10 * 3 + 3 * (16 + 3)


def test_model_size_of_a_quantized_tiny_model(tiny):
    model = tiny("tiny-llama").model
    spec = CompressionSpec("rtn", bits=4, group_size=32)
    linears = [weight_matrix(m) for _, m in target_linears(model)]
    n_lin = sum(w.numel() for w in linears)
    groups = sum(w.shape[0] * w.shape[1] // 32 for w in linears)
    total = sum(p.numel() for p in model.parameters())  # tied: counted once by parameters()
    size = model_size(model, spec)
    assert size["bits_per_weight"] == pytest.approx(4 + 20 / 32)
    assert size["size_fraction"] == pytest.approx(
        (n_lin * 4 + groups * 20 + (total - n_lin) * 16) / (total * 16))
    assert model_size(model, CompressionSpec("dense"))["size_fraction"] == 1.0


def test_pruned_size_counts_nonzeros_and_nm_index_bits():
    w = torch.tensor([[1.0, 0, 2, 0], [0, 3, 0, 4]])
    assert layer_bits(CompressionSpec("magnitude", 0.5), w) == 4 * 16
    assert layer_bits(CompressionSpec("magnitude", pattern="2:4"), w) == 4 * (16 + 2)
    assert layer_bits(CompressionSpec("bnb-nf4"), torch.ones(4, 64)) == 4 * 64 * 4 + 4 * 32
    assert layer_bits(CompressionSpec("bnb-int8"), torch.ones(4, 64)) == 4 * 64 * 8 + 4 * 32


@pytest.mark.parametrize("group_size", [None, 16])
def test_gptq_with_a_diagonal_hessian_is_rtn(group_size):
    """Without correlations there is no error to push onto other columns."""
    w = weights()
    H = torch.diag(torch.rand(64, generator=torch.Generator().manual_seed(1)) + 0.5)
    q, _ = gptq_quantize(w, H, 3, group_size, symmetric=False)
    assert torch.allclose(q, rtn(w, 3, group_size, False), atol=1e-5)


@pytest.mark.parametrize("bits, group_size, act_order", [(4, None, False), (3, 16, False),
                                                         (3, 16, True), (2, 16, True)])
def test_gptq_error_below_rtn_on_correlated_inputs(bits, group_size, act_order):
    x, w = correlated_inputs(), weights(32, 64, seed=2)
    H = 2 * x.T @ x / x.shape[0]
    q, _ = gptq_quantize(w, H, bits, group_size, symmetric=False, act_order=act_order)
    e_gptq, e_rtn = rel_error(w, q, x), rel_error(w, rtn(w, bits, group_size, False), x)
    assert e_gptq < 0.8 * e_rtn, (e_gptq, e_rtn)
    for a, b in group_bounds(64, group_size) if not act_order else []:
        assert max(len(torch.unique(r)) for r in q[:, a:b]) <= 2**bits


@pytest.mark.parametrize("group_size, act_order", [(None, False), (16, True)])
def test_layers_sharing_an_input_are_quantized_as_if_one_by_one(group_size, act_order):
    """q/k/v (gate/up) are swept as one stacked matrix: each must get its own GPTQ result."""
    x = correlated_inputs()
    H = 2 * x.T @ x / x.shape[0]
    stats = Hessian(64)
    stats.H = H
    spec = CompressionSpec("gptq", bits=3, group_size=group_size, act_order=act_order)
    ws = [weights(rows, 64, seed=rows) for rows in (32, 8, 8)]
    alone = [gptq_quantize(w, H, 3, group_size, False, act_order)[0] for w in ws]
    stats_out = quantize_layers(ws, stats, spec)  # edits ws in place
    assert stats_out == [{"bits": 3}] * 3
    for w, a in zip(ws, alone):
        assert torch.allclose(w, a, atol=1e-5)


@pytest.mark.parametrize("spec_kwargs, message", [
    (dict(method="rtn", bits=16), "bits in 2..8"),
    (dict(method="gptq"), "bits in 2..8"),
    (dict(method="rtn", bits=4, sparsity=0.5), "takes no sparsity"),
    (dict(method="rtn", bits=4, group_size=1), "group_size must be"),
    (dict(method="rtn", bits=4, act_order=True), "act_order applies to gptq"),
    (dict(method="bnb-int8", bits=4), "8-bit"),
    (dict(method="bnb-int8", double_quant=True), "double_quant"),
    (dict(method="bnb-nf4", group_size=64), "takes no group_size"),
    (dict(method="magnitude", sparsity=0.5, bits=4), "takes no bits"),
])
def test_bad_quantization_specs_are_refused(spec_kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompressionSpec(**spec_kwargs)


def test_spec_keys_of_earlier_methods_did_not_change():
    assert set(CompressionSpec("magnitude", 0.5).key()) == {
        "method", "sparsity", "pattern", "bits", "group_size", "calibration", "damping"}
    spec = CompressionSpec("gptq", bits=3, group_size=64, symmetric=True, act_order=True)
    assert CompressionSpec.from_key(spec.key()) == spec
    assert spec.label == "gptq w3 g64 sym act-order"


def test_group_size_that_does_not_divide_a_width_is_refused_unless_allowed(tiny):
    model = tiny("tiny-llama").model  # widths 64 and 128
    with pytest.raises(ValueError, match=r"group_size 48: layer .*q_proj has input width 64"):
        compress.check(CompressionSpec("rtn", bits=4, group_size=48), model)
    spec = CompressionSpec("rtn", bits=4, group_size=48, partial_groups=True)
    with compress.applied(model, spec) as report:
        assert any("last group of 16 inputs" in v for v in report["groups"].values())


@pytest.mark.parametrize("family", list(models.TINY_CONFIGS))
@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantizers_end_to_end(tiny, c4_spec, family, method):
    lm = tiny(family)
    spec = CompressionSpec(method, bits=3, group_size=32,
                           calibration=c4_spec if method == "gptq" else None)
    cal = compress.calibration.prepare(lm.tokenizer, c4_spec) if method == "gptq" else None
    before = {n: weight_matrix(m).clone() for n, m in target_linears(lm.model)}
    with compress.applied(lm.model, spec, cal) as report:
        for name, module in target_linears(lm.model):
            w = weight_matrix(module)
            assert not torch.equal(w, before[name])
            groups = w.reshape(w.shape[0], -1, 32)
            assert max(len(torch.unique(g)) for g in groups.reshape(-1, 32)) <= 8
            if method == "gptq":
                assert 0 < report["layers"][name]["error"] < 1
        assert "fake quantization" in report["arithmetic"]
        assert report["size"]["bits_per_weight"] == pytest.approx(3 + 19 / 32)
        ids = torch.tensor([[1, 2, 3, 4]])
        assert torch.isfinite(lm.model(input_ids=ids).logits).all()
    for name, module in target_linears(lm.model):
        assert torch.equal(weight_matrix(module), before[name])


def test_gptq_beats_rtn_on_a_tiny_model(tiny, c4_spec):
    """Reconstruction error of the first block's layers (dense inputs): GPTQ below RTN."""
    lm = tiny("tiny-llama")
    cal = compress.calibration.prepare(lm.tokenizer, c4_spec)
    spec = CompressionSpec("gptq", bits=3, calibration=c4_spec)
    with compress.applied(lm.model, spec, cal) as report:
        gptq_err = report["layers"]["model.layers.0.self_attn.q_proj"]["error"]
    w = weight_matrix(dict(target_linears(lm.model))["model.layers.0.self_attn.q_proj"])
    assert math.isfinite(gptq_err) and gptq_err < rel_error_on_inputs(lm, cal, w)


def rel_error_on_inputs(lm, cal, w):
    """RTN w3 per-channel error of q_proj on the first calibration windows' block-0 inputs."""
    seen = []
    layer = dict(target_linears(lm.model))["model.layers.0.self_attn.q_proj"]
    h = layer.register_forward_hook(lambda _m, a, _o: seen.append(a[0].detach()))
    with torch.no_grad():
        for row in cal.tokens[:compress.calibration.ERROR_SAMPLES]:
            lm.model(input_ids=row[None], use_cache=False)
    h.remove()
    x = torch.cat(seen).reshape(-1, w.shape[1])
    return rel_error(w, rtn(w, 3, None, False), x)

"""AWQ: scale and clip searches on small tensors, then the layer-by-layer pipeline."""

import pytest
import torch

from kickbench import compress
from kickbench.compress.awq import (Activations, awq_quantize, awq_scales, clipped,
                                    output_error, quantize_group, search_clip)
from kickbench.compress.layers import target_linears, weight_matrix
from kickbench.compress.quant import group_bounds, rtn
from kickbench.compress.spec import CompressionSpec

OUTLIERS = [3, 17, 40, 41]


def outlier_case(seed=0, tokens=1024, rows=32, cols=64):
    """Inputs where a few channels are 20x larger than the rest (AWQ's premise), weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, cols, generator=g)
    x[:, OUTLIERS] *= 20
    return x, torch.randn(rows, cols, generator=g)


def collected(x, chunk=100):
    stats = Activations(x.shape[1])
    for part in x.split(chunk):
        stats.add_batch(part)
    return stats


def test_collector_keeps_mean_abs_and_a_reproducible_sample_of_rows():
    x, _ = outlier_case()
    a, b = collected(x), collected(x)
    assert torch.allclose(a.mean_abs, x.abs().mean(0), atol=1e-5)
    assert a.x.shape == (512, 64) and torch.equal(a.x, b.x)
    index = {tuple(r.tolist()): i for i, r in enumerate(x)}
    rows = [index[tuple(r.tolist())] for r in a.x]  # every kept row is an input row, once
    assert len(set(rows)) == 512 and max(rows) > 900  # and late batches are represented


@pytest.mark.parametrize("group_size, symmetric", [(None, False), (16, True), (24, False)])
def test_one_grid_point_without_clipping_is_rtn_exactly(group_size, symmetric):
    x, w = outlier_case()
    stats = collected(x)
    assert torch.equal(awq_scales(stats.mean_abs, 0.0), torch.ones(64))
    q, alpha, ratios = awq_quantize(w, stats.mean_abs, stats.x, 3, group_size, symmetric,
                                    n_grid=1, clip=False)
    assert alpha == 0.0 and ratios is None
    assert torch.equal(q, rtn(w, 3, group_size, symmetric))


@pytest.mark.parametrize("group_size", [None, 16])
def test_scales_beat_rtn_when_a_few_input_channels_are_large(group_size):
    x, w = outlier_case()
    stats = collected(x)
    q, alpha, _ = awq_quantize(w, stats.mean_abs, stats.x, 3, group_size, False, clip=False)
    e_awq, e_rtn = output_error(x, w, q), output_error(x, w, rtn(w, 3, group_size, False))
    assert alpha > 0 and e_awq < 0.5 * e_rtn, (alpha, e_awq, e_rtn)


def test_after_multiplying_back_by_s_each_group_has_at_most_2_to_the_bits_levels():
    x, w = outlier_case()
    stats = collected(x)
    q, alpha, _ = awq_quantize(w, stats.mean_abs, stats.x, 3, 16, False)
    back = q * awq_scales(stats.mean_abs, alpha)  # Q(clip(W s)), up to float rounding
    for a, b in group_bounds(64, 16):
        for row in back[:, a:b]:
            v = row.sort().values
            gaps = (v[1:] - v[:-1]) > 1e-4 * (v[-1] - v[0])
            assert int(gaps.sum()) + 1 <= 2**3


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("group_size", [None, 16])
def test_clipping_never_increases_the_error_it_searches(seed, group_size):
    """Per row and group the search includes ratio 1 (no clipping) and keeps the least
    error of the group's partial output; per channel that is the whole output's error."""
    x, w = outlier_case(seed)
    x = x[:512]
    ratios, err = search_clip(x, w, 3, group_size, False)
    _, err_none = search_clip(x, w, 3, group_size, False, n_grid=2)  # ratio 1 only
    assert (err <= err_none).all() and (ratios <= 1).all() and (ratios >= 0.55).all()
    if group_size is None:
        q_clip = rtn(clipped(w, ratios, None), 3, None, False)
        assert output_error(x, w, q_clip) <= output_error(x, w, rtn(w, 3, None, False))


def test_stacked_layers_share_alpha_and_report_their_clip():
    x, w = outlier_case()
    stats = collected(x)
    ws = [w[:16].clone(), w[16:24].clone(), w[24:].clone()]
    out = quantize_group(ws, stats, CompressionSpec("awq", bits=3, group_size=16))
    q, alpha, ratios = awq_quantize(w, stats.mean_abs, stats.x, 3, 16, False)
    assert torch.equal(torch.cat(ws), q)
    assert [o["alpha"] for o in out] == [alpha] * 3 and alpha > 0
    assert out[0]["clip"] == pytest.approx(ratios[:16].mean().item())


def test_awq_end_to_end_on_a_tiny_model(tiny, c4_spec):
    lm = tiny("tiny-llama")
    cal = compress.calibration.prepare(lm.tokenizer, c4_spec)
    spec = CompressionSpec("awq", bits=4, group_size=32, calibration=c4_spec)
    before = {n: weight_matrix(m).clone() for n, m in target_linears(lm.model)}
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        dense = lm.model(input_ids=ids).logits
    with compress.applied(lm.model, spec, cal) as report:
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits
        for name, module in target_linears(lm.model):
            stats = report["layers"][name]
            assert 0 <= stats["alpha"] < 1 and 0.5 < stats["clip"] <= 1 and stats["bits"] == 4
            assert 0 < stats["error"] < 1
            assert not torch.equal(weight_matrix(module), before[name])
        assert report["size"]["bits_per_weight"] == pytest.approx(4 + 20 / 32)
        assert "fake quantization" in report["arithmetic"]
    assert torch.isfinite(logits).all() and not torch.allclose(logits, dense)
    for name, module in target_linears(lm.model):
        assert torch.equal(weight_matrix(module), before[name])


def test_one_grid_point_without_clipping_is_rtn_on_a_tiny_model(tiny, c4_spec):
    lm = tiny("tiny-llama")
    cal = compress.calibration.prepare(lm.tokenizer, c4_spec)
    with compress.applied(lm.model, CompressionSpec("rtn", bits=3, group_size=32)):
        ref = {n: weight_matrix(m).clone() for n, m in target_linears(lm.model)}
    spec = CompressionSpec("awq", bits=3, group_size=32, calibration=c4_spec,
                           options={"awq_grid": 1, "awq_clip": False})
    with compress.applied(lm.model, spec, cal) as report:
        for name, module in target_linears(lm.model):
            assert torch.equal(weight_matrix(module), ref[name])
            assert report["layers"][name]["alpha"] == 0.0 and "clip" not in report["layers"][name]


@pytest.mark.parametrize("kwargs, message", [
    (dict(sparsity=0.5), "takes no sparsity"),
    (dict(options={"awq_alpha": 0.5}), "takes no option 'awq_alpha'"),
    (dict(options={"awq_grid": 0}), "at least 1 point"),
    (dict(options={"awq_clip": 1}), "must be a bool"),
    (dict(bits=1), "bits in 2..8"),
])
def test_bad_awq_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompressionSpec("awq", **{"bits": 4, **kwargs})


def test_awq_key_has_its_options_with_defaults():
    spec = CompressionSpec("awq", bits=4)
    assert spec.key()["options"] == {"awq_clip": True, "awq_grid": 20}
    assert CompressionSpec.from_key(spec.key()) == spec
    assert spec.label == "awq w4 per-channel" and spec.family == "quantization"
    assert compress.needs_calibration(spec)

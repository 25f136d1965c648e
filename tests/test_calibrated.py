"""Wanda and SparseGPT: pure maths on small tensors, then the layer-by-layer pipeline."""

import pytest
import torch

from kickbench import compress, models
from kickbench.compress import calibration as calib
from kickbench.compress.layers import target_linears, weight_matrix
from kickbench.compress.magnitude import magnitude_mask
from kickbench.compress.hessian import Hessian, inverse_cholesky
from kickbench.compress.sparsegpt import sparsegpt_prune
from kickbench.compress.spec import CompressionSpec
from kickbench.compress.wanda import InputNorms, wanda_mask

from helpers import correlated_inputs, rel_error

def test_wanda_mask_equals_brute_force_per_row():
    g = torch.Generator().manual_seed(3)
    w, norms = torch.randn(8, 20, generator=g), torch.rand(20, generator=g)
    mask = wanda_mask(w, norms, 0.4, None)
    score = w.abs() * norms.sqrt()
    for r in range(8):
        dropped = set(sorted(range(20), key=lambda j: score[r, j].item())[:8])
        assert {j for j in range(20) if not mask[r, j]} == dropped


def test_wanda_nm_is_exact():
    mask = wanda_mask(torch.randn(6, 16), torch.rand(16), 0.0, (2, 4))
    assert (mask.reshape(-1, 4).sum(1) == 2).all()


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(nm):
    x = correlated_inputs()
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    stats, h = InputNorms(64), Hessian(64)
    for chunk in x.split(128):
        stats.add_batch(chunk)
        h.add_batch(chunk)
    mag = w * magnitude_mask(w, 0.5, nm)
    wan = w * wanda_mask(w, stats.sq, 0.5, nm)
    sgpt, keep, _ = sparsegpt_prune(w, h.H, 0.5, nm)
    e = [rel_error(w, v, x) for v in (sgpt, wan, mag)]
    assert e[0] < e[1] < e[2], e
    assert (sgpt[~keep] == 0).all() and keep.float().mean().item() == pytest.approx(0.5)


def test_hessian_matches_its_definition():
    x = torch.randn(300, 8)
    h = Hessian(8)
    for chunk in x.split(64):
        h.add_batch(chunk)
    assert torch.allclose(h.H, 2 * x.T @ x / 300, atol=1e-5)


def test_sparsegpt_survives_rank_deficient_and_dead_inputs():
    x = torch.randn(10, 48)  # 10 tokens for 48 inputs: rank 10
    x[:, 5] = 0              # a dead input
    h = Hessian(48)
    h.add_batch(x)
    w = torch.randn(16, 48)
    new, keep, _ = sparsegpt_prune(w, h.H, 0.5, None)
    assert torch.isfinite(new).all() and (new[:, 5] == 0).all()
    assert keep.float().mean().item() == pytest.approx(0.5)


def test_damping_is_raised_when_the_hessian_is_not_positive_definite():
    _, used = inverse_cholesky(torch.diag(torch.tensor([1.0, 1.0, -0.05])), 0.01)
    assert used == pytest.approx(0.1)
    with pytest.raises(torch.linalg.LinAlgError, match="not positive definite"):
        inverse_cholesky(-torch.eye(3), 0.01, max_tries=2)


def test_calibration_windows_are_reproducible(tiny, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    tok = tiny("tiny-llama").tokenizer
    spec = calib.CalibrationSpec(str(text), nsamples=4, seqlen=16, seed=1)
    a, b = calib.calibration_tokens(tok, spec), calib.calibration_tokens(tok, spec)
    assert a.shape == (4, 16) and torch.equal(a, b)
    other = calib.calibration_tokens(tok, calib.CalibrationSpec(str(text), 4, 16, seed=2))
    assert calib.tokens_hash(a) != calib.tokens_hash(other)
    with pytest.raises(ValueError, match="fewer than seqlen=4096"):
        calib.calibration_tokens(tok, calib.CalibrationSpec(str(text), 4, 4096))


@pytest.mark.parametrize("family", list(models.TINY_CONFIGS))
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern, sparsity", [("unstructured", 0.5), ("2:4", 0.0)])
def test_calibrated_methods_end_to_end(tiny, c4_spec, family, method, pattern, sparsity):
    lm = tiny(family)
    spec = CompressionSpec(method, sparsity=sparsity, pattern=pattern, calibration=c4_spec)
    cal = calib.prepare(lm.tokenizer, c4_spec)
    before = {n: weight_matrix(m).clone() for n, m in target_linears(lm.model)}
    with compress.applied(lm.model, spec, cal) as report:
        for name, module in target_linears(lm.model):
            w = weight_matrix(module)
            assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=1 / w.shape[1])
            if pattern == "2:4":
                assert ((w.reshape(-1, 4) != 0).sum(1) <= 2).all()
            stats = report["layers"][name]
            assert 0 < stats["error"] < 1.5
        assert report["calibration"]["hash"] == cal.hash
    for name, module in target_linears(lm.model):
        assert torch.equal(weight_matrix(module), before[name])


def test_calibrated_method_without_calibration_is_refused(tiny):
    with pytest.raises(ValueError, match="wanda needs calibration data"):
        compress.apply(tiny("tiny-llama").model, CompressionSpec("wanda", 0.5))
    with pytest.raises(ValueError, match="takes no calibration"):
        compress.check(CompressionSpec("magnitude", 0.5, calibration=calib.CalibrationSpec()))


def test_project_calibration_text_serves_the_default_spec(tiny):
    spec = calib.CalibrationSpec()  # data/calibration.jsonl, 16 x 256
    assert len(calib.read_texts(spec.source)) == 80
    tokens = calib.calibration_tokens(tiny("tiny-llama").tokenizer, spec)
    assert tokens.shape == (16, 256)


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gpt2"])
def test_first_block_matches_a_plain_dense_forward(tiny, c4_spec, family):
    """Block 0 sees dense inputs, so its Wanda masks and errors can be recomputed from hooks
    on an ordinary forward pass: the pipeline's chunking and early stop lose no sample."""
    lm = tiny(family)
    cspec = calib.CalibrationSpec(c4_spec.source, nsamples=2 * calib.CHUNK + 1, seqlen=32)
    cal = calib.prepare(lm.tokenizer, cspec)
    block0 = {n: m for n, m in target_linears(lm.model)
              if n.startswith(next(iter(dict(target_linears(lm.model)))).rsplit(".", 2)[0])}
    seen = {n: [] for n in block0}
    handles = [m.register_forward_hook(lambda _m, a, _o, n=n: seen[n].append(a[0].detach()))
               for n, m in block0.items()]
    with torch.no_grad():
        for row in cal.tokens:
            lm.model(input_ids=row[None], use_cache=False)
    for h in handles:
        h.remove()
    spec = CompressionSpec("wanda", 0.5, calibration=cspec)
    dense = {n: weight_matrix(m).clone() for n, m in block0.items()}
    with compress.applied(lm.model, spec, cal) as report:
        for n, m in block0.items():
            x = torch.cat(seen[n]).reshape(-1, dense[n].shape[1])
            mask = wanda_mask(dense[n], (x * x).sum(0), 0.5, None)
            assert torch.equal(weight_matrix(m) != 0, mask & (dense[n] != 0)), n
            if n.endswith(("q_proj", "k_proj", "v_proj", "c_attn")):  # inputs still dense
                first = torch.cat(seen[n][:calib.ERROR_SAMPLES]).reshape(-1, dense[n].shape[1])
                expected = rel_error(dense[n], weight_matrix(m), first)
                assert report["layers"][n]["error"] == pytest.approx(expected, rel=1e-4), n


@pytest.mark.parametrize("family", list(models.TINY_CONFIGS))
def test_captured_blocks_reproduce_the_models_own_forward(tiny, c4_spec, family):
    """Running the blocks one by one on the captured inputs and per-block keyword arguments
    gives every block's output in an ordinary forward (Gemma 3's layers differ in masks/rope)."""
    lm = tiny(family)
    cal = calib.prepare(lm.tokenizer, c4_spec).captured(lm.model)
    blocks = compress.layers.decoder_blocks(lm.model)
    outputs = [[] for _ in blocks]
    handles = [b.register_forward_hook(
        lambda _m, _a, out, i=i: outputs[i].append(out[0] if isinstance(out, tuple) else out))
        for i, b in enumerate(blocks)]
    with torch.no_grad():
        lm.model(input_ids=cal.tokens, use_cache=False)
    for h in handles:
        h.remove()
    hidden = cal.inputs
    for i, block in enumerate(blocks):
        hidden = calib._run_block(block, hidden, cal.kwargs[i])
        assert torch.allclose(torch.cat(hidden), outputs[i][0], atol=1e-5), (family, i)
